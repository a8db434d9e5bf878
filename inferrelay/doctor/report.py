"""The doctor's report: the inspection, plus memory per device, the engines that can serve it, alternatives."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from inferrelay.config.schema import ModelSpec
from inferrelay.doctor.findings import Inspection
from inferrelay.doctor.inspect import inspect_model
from inferrelay.engines.base import Capability
from inferrelay.engines.devices import pick_dtype, visible_gpus
from inferrelay.engines.memory_rule import EngineMemory
from inferrelay.engines.registry import EngineRegistry
from inferrelay.runtime.memory import available_bytes, estimate_memory
from inferrelay.runtime.placement import facts_for, memory_rule

DEFAULT_CONTEXT = ModelSpec.model_fields["context_length"].default


@dataclass(frozen=True)
class EngineVerdict:
    engine: str
    can_serve: bool
    reason: str
    build: str | None = None  # how the engine's library was compiled, where that matters (llama.cpp's CPU tier)


@dataclass(frozen=True)
class DeviceFit:
    device: str
    engine: str
    needed: int
    free: int | None
    fits: bool | None  # None: the free memory cannot be known here without loading a GPU library


@dataclass(frozen=True)
class Alternative:
    name: str
    parameters: int | None
    needed: int
    fits: bool


@dataclass
class Report:
    inspection: Inspection
    engines: list[EngineVerdict] = field(default_factory=list)
    memory: list[DeviceFit] = field(default_factory=list)
    alternatives: list[Alternative] = field(default_factory=list)
    tuned: list[dict[str, Any]] = field(default_factory=list)
    """What `inferrelay tune` measured here for the models served from this path (tune/book.py)."""

    @property
    def usable(self) -> bool:
        return self.inspection.usable and any(e.can_serve for e in self.engines)

    def as_dict(self) -> dict[str, Any]:
        found = self.inspection
        return {
            "path": str(found.path),
            "format": found.format,
            "capability": found.capability,
            "architecture": found.architecture,
            "usable": self.usable,
            "details": found.details,
            "components": [asdict(c) | {"usable": c.usable} for c in found.components],
            "problems": [asdict(p) for p in found.problems],
            "engines": [asdict(e) for e in self.engines],
            "memory": [asdict(m) for m in self.memory],
            "alternatives": [asdict(a) for a in self.alternatives],
            "tuned": self.tuned,
        }


def diagnose(path: Path, engines: EngineRegistry, candidates: list[ModelSpec], context_length: int = 0) -> Report:
    """Everything the doctor says about `path`; `candidates` are the models it may suggest instead."""
    report = Report(inspect_model(path))
    found = report.inspection
    report.engines = [_verdict(name, engines, found) for name in engines.names() if _reads_files(engines, name)]
    if found.facts is not None:
        context = context_length or min(found.facts.trained_context or DEFAULT_CONTEXT, DEFAULT_CONTEXT)
        encoder = found.capability == "embeddings"
        for device in ["cpu", *(f"cuda:{gpu}" for gpu in visible_gpus())]:
            free = available_bytes(device)
            for verdict in (v for v in report.engines if v.can_serve):
                dtype = pick_dtype("auto", device)
                need = estimate_memory(found.facts, _rule(engines, verdict.engine), dtype, context, encoder).total
                report.memory.append(
                    DeviceFit(device, verdict.engine, need, free, None if free is None else need <= free)
                )
    report.alternatives = _alternatives(found, candidates, engines)
    if not any(v.can_serve for v in report.engines) and found.usable:
        found.problem(
            "no engine here can serve it",
            "see the engines' reasons above: install the engine it needs, or use an alternative",
        )
    return report


def _verdict(name: str, engines: EngineRegistry, found: Inspection) -> EngineVerdict:
    state = engines.state(name)
    engine = state.engine if state else None
    if state is None or engine is None:
        return EngineVerdict(name, False, state.probe.reason if state else "not installed")
    if found.format is None or found.format not in engine.reads:
        reads = ", ".join(sorted(engine.reads))
        return EngineVerdict(name, False, f"reads {reads}; this is {found.format or 'an unknown format'}")
    if found.capability and found.capability not in {c.value for c in engine.capabilities}:
        return EngineVerdict(name, False, f"does not serve {found.capability}")
    if not state.probe.available:
        return EngineVerdict(name, False, state.probe.reason)
    return EngineVerdict(name, True, "reads this format and runs here", engine.build())


def _reads_files(engines: EngineRegistry, name: str) -> bool:
    """An engine that reads no model files (fake) has nothing to say about one; a broken one says why."""
    state = engines.state(name)
    return state is None or state.engine is None or bool(state.engine.reads)


def _rule(engines: EngineRegistry, name: str) -> EngineMemory:
    """How the engine named `name` holds a model: the registry's instance says, else its installed class."""
    state = engines.state(name)
    return state.engine.memory if state is not None and state.engine is not None else memory_rule(name)


def _alternatives(found: Inspection, candidates: list[ModelSpec], engines: EngineRegistry) -> list[Alternative]:
    """Models with the same capability that fit in the memory free now: those that fit first, then largest."""
    wanted = {"chat": Capability.CHAT, "embeddings": Capability.EMBEDDINGS}.get(found.capability or "")
    free = available_bytes("cpu")
    chosen = []
    for spec in candidates:
        facts = facts_for(spec.source)
        if wanted not in spec.capabilities or facts is None or facts.path.resolve() == found.path.resolve():
            continue
        dtype = pick_dtype(spec.dtype, "cpu")
        need = estimate_memory(facts, _rule(engines, spec.engines[0]), dtype, spec.context_length, spec.is_encoder)
        chosen.append(Alternative(spec.name, facts.parameters, need.total, free is None or need.total <= free))
    return sorted(chosen, key=lambda a: (not a.fits, -(a.parameters or 0)))
