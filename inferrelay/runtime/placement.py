"""Before a load: the device (and why), the dtype, and the memory the model is expected to hold."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

from inferrelay.config.schema import ModelSpec
from inferrelay.config.sources import resolve_source
from inferrelay.engines.base import Engine
from inferrelay.engines.devices import pick_device, pick_dtype
from inferrelay.engines.memory_rule import EngineMemory
from inferrelay.engines.registry import engine_class
from inferrelay.errors import InferrelayError
from inferrelay.models.facts import ModelFacts, model_facts
from inferrelay.runtime.memory import MemoryEstimate, estimate_memory


@dataclass(frozen=True)
class Planned:
    device: str
    device_reason: str
    dtype: str
    estimate: MemoryEstimate | None


def plan_load(spec: ModelSpec, engine: Engine | type[Engine] | str) -> Planned:
    device, reason = pick_device(spec.device)
    dtype = pick_dtype(spec.dtype, device)
    return Planned(device, reason, dtype, estimate_for(spec, engine, dtype))


def estimate_for(spec: ModelSpec, engine: Engine | type[Engine] | str, dtype: str) -> MemoryEstimate | None:
    """By the engine's own memory rule; None when the source cannot be read: the engine's load then says what is
    wrong. A name is looked up among the installed engine classes (for callers that hold only a name)."""
    facts = facts_for(spec.source)
    if facts is None:
        return None
    found = (engine_class(engine) or Engine) if isinstance(engine, str) else engine
    return estimate_memory(facts, found.memory, dtype, found.kv_cells(spec), spec.is_encoder)


def memory_rule(engine: Engine | type[Engine] | str) -> EngineMemory:
    """How `engine` holds a model; for a name no installed engine has, the default any engine starts from."""
    if isinstance(engine, str):
        return (engine_class(engine) or Engine).memory
    return engine.memory


def facts_for(source: str) -> ModelFacts | None:
    try:
        resolved = resolve_source(source)
        stamp = resolved.path.stat().st_mtime_ns
        return _facts(resolved.path, resolved.format, stamp)
    except (InferrelayError, OSError):
        return None


@cache
def _facts(path: Path, format: str, stamp: int) -> ModelFacts:
    return model_facts(path, format)
