"""How an engine holds a model in memory: the rule each engine declares (`Engine.memory`), runtime/memory.py applies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

MIB = 2**20
DTYPE: Literal["dtype"] = "dtype"
"""Bytes of the dtype the model runs in, per parameter or KV element."""
STORED: Literal["stored"] = "stored"
"""Weights held as the files store them (a GGUF's quantised bytes)."""

PerUnit = float | Literal["dtype"]


@dataclass(frozen=True)
class EngineMemory:
    """How an engine holds a model: bytes per decoder or encoder parameter, per KV element, and its allowances."""

    decoder_weights: PerUnit | Literal["stored"]
    encoder_weights: PerUnit | Literal["stored"]
    kv_element: PerUnit
    overhead: int
    encoder_activations: int


AS_STORED = EngineMemory(STORED, STORED, DTYPE, 64 * MIB, 32 * MIB)
"""The default for an engine that declares nothing: its weights counted as the files' bytes."""
