"""Which device a model runs on: CUDA, then MPS, then CPU, unless the model names one."""

from __future__ import annotations

import importlib.util


def choose_device(requested: str) -> str:
    if requested != "auto":
        return requested
    if importlib.util.find_spec("torch") is not None:
        import torch

        if torch.cuda.is_available():
            return "cuda"
        if torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime

        if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            return "cuda"
    return "cpu"


DTYPE_BY_DEVICE = {"cuda": "bfloat16", "mps": "float16", "cpu": "float32"}
"""SPEC §2: bf16 on CUDA, fp16 on MPS, fp32 on CPU."""
