"""Which device a model runs on: CUDA, then MPS, then CPU, unless the model names one; and why."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess


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


def visible_gpus() -> list[str]:
    """The GPUs a worker can be pinned to: CUDA_VISIBLE_DEVICES when set, else those nvidia-smi lists."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(line for line in listed.splitlines() if line.startswith("GPU "))]
