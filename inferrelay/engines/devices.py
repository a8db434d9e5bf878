"""Which device a model runs on: CUDA, then MPS, then CPU, unless the model names one; and why."""

from __future__ import annotations

import importlib.util


def pick_device(requested: str) -> tuple[str, str]:
    """The device, and the reason it was chosen (shown in the runtime's stats)."""
    if requested != "auto":
        return requested, "configured"
    if importlib.util.find_spec("torch") is not None:
        import torch

        if torch.cuda.is_available():
            return "cuda", f"auto: torch sees {torch.cuda.device_count()} CUDA device(s)"
        if torch.backends.mps.is_available():
            return "mps", "auto: torch sees Apple MPS"
        return "cpu", f"auto: torch {torch.__version__} sees no CUDA or MPS device"
    if importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime

        if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            return "cuda", "auto: onnxruntime offers CUDAExecutionProvider"
    return "cpu", "auto: no GPU library (torch, onnxruntime-gpu) installed"


def choose_device(requested: str) -> str:
    return pick_device(requested)[0]


def pick_dtype(requested: str, device: str) -> str:
    """SPEC §2 by device (bf16 on CUDA, fp16 on MPS, fp32 on CPU) unless the model names one."""
    if requested != "auto":
        return requested
    return DTYPE_BY_DEVICE.get(device.split(":")[0], "float32")


DTYPE_BY_DEVICE = {"cuda": "bfloat16", "mps": "float16", "cpu": "float32"}
"""SPEC §2: bf16 on CUDA, fp16 on MPS, fp32 on CPU."""
