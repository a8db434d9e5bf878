"""Memory before a load (an estimate from the files) and after (measured); free memory per device.

The estimates are rules of thumb per engine (one table), compared with
measurements in docs/runtime.md: weights as the engine holds them, the KV
cache for the model's context length, and a fixed runtime allowance.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import resource
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inferrelay.models.facts import ModelFacts

MIB = 2**20
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "int8": 1}


@dataclass(frozen=True)
class EngineMemory:
    """How an engine holds a model: bytes per parameter (None: the file as stored), KV element bytes, overhead."""

    weight_bytes_per_parameter: float | None
    kv_bytes: float | None  # None: the dtype's size
    overhead: int


ENGINES: dict[str, EngineMemory] = {
    "llamacpp": EngineMemory(None, 2, 32 * MIB),  # quantised weights as stored; f16 KV cache
    "torch": EngineMemory(-1, None, 128 * MIB),  # -1: the dtype's bytes per parameter
    "onnx": EngineMemory(1, 4, 64 * MIB),  # int8 decoder exports; fp32 encoder exports (below)
    "fake": EngineMemory(0, 0, 0),
}
ONNX_ENCODER_BYTES = 4
ENCODER_ACTIVATIONS = 32 * MIB


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int
    kv_cache: int
    overhead: int

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.overhead

    def as_dict(self) -> dict[str, Any]:
        return {"weights": self.weights, "kv_cache": self.kv_cache, "overhead": self.overhead, "total": self.total}


def estimate_memory(
    facts: ModelFacts, engine: str, dtype: str, context_length: int, is_encoder: bool
) -> MemoryEstimate:
    rule = ENGINES.get(engine, EngineMemory(None, None, 64 * MIB))
    dtype_bytes = DTYPE_BYTES.get(dtype, 4)
    per_parameter = rule.weight_bytes_per_parameter
    if per_parameter == -1 or (engine == "onnx" and is_encoder):
        per_parameter = dtype_bytes if engine == "torch" else ONNX_ENCODER_BYTES
    if per_parameter is None or facts.parameters is None:
        weights = facts.weight_bytes
    else:
        weights = int(facts.parameters * per_parameter)
    kv = 0
    if not is_encoder and facts.layers and facts.kv_heads and facts.head_dim:
        element = rule.kv_bytes if rule.kv_bytes is not None else dtype_bytes
        kv = int(2 * facts.layers * facts.kv_heads * facts.head_dim * context_length * element)
    overhead = rule.overhead + (ENCODER_ACTIVATIONS if is_encoder and engine != "fake" else 0)
    return MemoryEstimate(weights, kv, overhead)


def process_rss() -> int:
    """Resident bytes of this process now."""
    statm = Path("/proc/self/statm")
    if statm.exists():
        return int(statm.read_text().split()[1]) * resource.getpagesize()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def release_freed() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc keeps them otherwise).

    Without this an unloaded model's memory stays in the process, unload
    frees nothing that the OS can see, and the next load reuses it, so
    neither figure would be true.
    """
    gc.collect()
    libc_name = ctypes.util.find_library("c")
    if sys.platform.startswith("linux") and libc_name:
        libc = ctypes.CDLL(libc_name)
        if hasattr(libc, "malloc_trim"):
            libc.malloc_trim(0)


def _meminfo(field: str) -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _cuda(device: str) -> tuple[int, int] | None:
    """(free, total) from torch, only if torch is already imported: never import it just to ask."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    index = int(device.split(":")[1]) if ":" in device else 0
    free, total = torch.cuda.mem_get_info(index)
    return int(free), int(total)


def available_bytes(device: str) -> int | None:
    if device == "cpu":
        return _meminfo("MemAvailable")
    if device.startswith("cuda"):
        info = _cuda(device)
        return info[0] if info else None
    return None


def device_total_bytes(device: str) -> int | None:
    if device == "cpu":
        return _meminfo("MemTotal")
    if device.startswith("cuda"):
        info = _cuda(device)
        return info[1] if info else None
    return None


def format_bytes(n: int) -> str:
    if abs(n) >= 2**30:
        return f"{n / 2**30:.2f} GiB"
    return f"{n / MIB:.1f} MiB"
