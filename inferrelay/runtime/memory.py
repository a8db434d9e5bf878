"""Memory before a load (an estimate from the files) and after (measured); free memory per device.

The estimates are rules of thumb, each engine's own (`Engine.memory`, an
`EngineMemory`): weights as the engine holds them, the KV cache for the
model's context length, and a fixed runtime allowance. docs/runtime.md
compares them with measurements.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import resource
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from inferrelay.engines.memory_rule import DTYPE, MIB, STORED, EngineMemory, PerUnit
from inferrelay.models.facts import ModelFacts

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "int8": 1}


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
    facts: ModelFacts, rule: EngineMemory, dtype: str, context_length: int, is_encoder: bool
) -> MemoryEstimate:
    """What an engine holding models by `rule` (its `Engine.memory`) should hold for this model in `dtype`: an
    estimate, measured against in docs/runtime.md."""
    if is_encoder:
        return MemoryEstimate(_weights(facts, rule.encoder_weights, dtype), 0, rule.overhead + rule.encoder_activations)
    kv_cache = _kv_cache(facts, _per_unit(rule.kv_element, dtype), context_length)
    return MemoryEstimate(_weights(facts, rule.decoder_weights, dtype), kv_cache, rule.overhead)


def _per_unit(rule: PerUnit, dtype: str) -> float:
    return DTYPE_BYTES.get(dtype, DTYPE_BYTES["float32"]) if rule == DTYPE else rule


def _weights(facts: ModelFacts, held: PerUnit | Literal["stored"], dtype: str) -> int:
    if held == STORED:
        return facts.weight_bytes
    per_parameter = _per_unit(held, dtype)
    if facts.parameters is not None:
        return int(facts.parameters * per_parameter)
    # Parameters unknown (pickled or ONNX weights): the files, scaled from the dtype they are stored in.
    stored = DTYPE_BYTES.get(facts.stored_dtype or "", per_parameter)  # unknown: held as stored
    return int(facts.weight_bytes * per_parameter / stored) if stored else 0


def _kv_cache(facts: ModelFacts, element_bytes: float, context_length: int) -> int:
    """Keys and values for every layer and KV head over the context; 0 when the files do not say the dimensions."""
    if not (facts.layers and facts.kv_heads and facts.head_dim):
        return 0
    return int(2 * facts.layers * facts.kv_heads * facts.head_dim * context_length * element_bytes)


CHARS_PER_TOKEN = 3
"""A conservative guess (English runs nearer 4) for sizing a batch before it is tokenized."""
ACTIVATION_WIDTH = 8
"""Floats per token and hidden unit live at once in one encoder layer: Q, K, V, the attention output and
the feed-forward's 4x hidden intermediate and its output."""


def encoder_activations(facts: ModelFacts, texts: list[str], element_bytes: int = 4, window: int | None = None) -> int:
    """Working memory one batch of `texts` needs in an encoder: every text padded to the longest (at most the
    model's `window` of tokens), one layer at a time, plus each head's attention scores."""
    tokens = max((len(t) for t in texts), default=0) // CHARS_PER_TOKEN + 2
    tokens = tokens if window is None else min(tokens, window)
    hidden = facts.hidden_size or 768
    heads = facts.attention_heads or 12
    return len(texts) * tokens * (hidden * ACTIVATION_WIDTH + heads * tokens) * element_bytes


def process_rss() -> int:
    """Resident bytes of this process now (Linux); elsewhere its peak, the closest figure getrusage gives."""
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
    """Free memory on `device` now; None where it cannot be known cheaply (MPS, CUDA before torch is loaded)."""
    if device == "cpu":
        return _meminfo("MemAvailable")
    if device.startswith("cuda"):
        info = _cuda(device)
        return info[0] if info else None
    return None


def device_total_bytes(device: str) -> int | None:
    """All the memory `device` has, by the same rules as available_bytes."""
    if device == "cpu":
        return _meminfo("MemTotal")
    if device.startswith("cuda"):
        info = _cuda(device)
        return info[1] if info else None
    return None


def format_bytes(n: int) -> str:
    """For messages and logs: "512.0 MiB", "1.25 GiB"."""
    if abs(n) >= 2**30:
        return f"{n / 2**30:.2f} GiB"
    return f"{n / MIB:.1f} MiB"
