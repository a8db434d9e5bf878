"""What a measurement depends on: the CPU (model and flags), the GPU, and the engines' library versions.
A tuning taken under another fingerprint is stale."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from typing import Any

LIBRARIES = (
    "llama-cpp-python", "onnxruntime", "onnxruntime-genai", "torch", "transformers", "sentence-transformers",
    "optimum", "vllm", "deepspeed",
)  # fmt: skip


@cache
def machine() -> dict[str, Any]:
    cpu_model, flags = _cpu()
    return {
        "cpu": cpu_model,
        "cpu_flags": hashlib.sha256(" ".join(sorted(flags)).encode()).hexdigest()[:16],
        "cpus": os.cpu_count() or 1,
        "machine": platform.machine(),
        "gpu": _gpu(),
        "libraries": {name: v for name in LIBRARIES if (v := _version(name))},
    }


@cache
def digest() -> str:
    return hashlib.sha256(json.dumps(machine(), sort_keys=True).encode()).hexdigest()[:16]


def _cpu() -> tuple[str, list[str]]:
    try:
        text = open("/proc/cpuinfo").read()  # noqa: SIM115 - read once
    except OSError:
        return platform.processor() or platform.machine(), []
    model, flags = "", list[str]()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and not model:
            model = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = value.split()
    return model or platform.machine(), flags


def _gpu() -> str | None:
    """The GPUs' names from nvidia-smi, without importing torch; None without one."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    names = [line.strip() for line in out.stdout.splitlines() if line.strip()]
    return ", ".join(names) or None


def _version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None
