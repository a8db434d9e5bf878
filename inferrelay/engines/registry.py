"""Engines discovered through the `inferrelay.engines` entry points, and what happened to each."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from inferrelay.engines.base import Engine, ProbeResult, utcnow
from inferrelay.errors import ErrorKind, InferrelayError, ModelScopedError

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "inferrelay.engines"


@dataclass
class EngineFailure:
    kind: str
    reason: str
    model: str
    at: datetime = field(default_factory=utcnow)


@dataclass
class EngineState:
    engine: Engine | None
    probe: ProbeResult
    last_failure: EngineFailure | None = None

    def as_dict(self, name: str) -> dict[str, Any]:
        failure = self.last_failure
        return {
            "name": name,
            "available": self.probe.available,
            "error": None if self.probe.available else self.probe.reason,
            "checked_at": self.probe.checked_at.isoformat(),
            "capabilities": sorted(c.value for c in self.engine.capabilities) if self.engine else [],
            "last_failure": None
            if failure is None
            else {"kind": failure.kind, "reason": failure.reason, "model": failure.model, "at": failure.at.isoformat()},
        }


def engine_class(name: str) -> type[Engine] | None:
    """The engine class an entry point names, neither instantiated nor probed; None when none does or it is
    broken. For facts declared on the class (memory, precision steps) where no registry is at hand."""
    for point in entry_points(group=ENTRY_POINT_GROUP, name=name):
        return _loaded_class(point)
    return None


def engine_classes() -> list[type[Engine]]:
    """Every engine class the entry points name (a broken plugin left out): what the server may choose from."""
    found = (_loaded_class(point) for point in entry_points(group=ENTRY_POINT_GROUP))
    return [cls for cls in found if cls is not None]


def _loaded_class(point: EntryPoint) -> type[Engine] | None:
    try:
        loaded = point.load()
    except Exception as exc:  # a broken plugin is the registry's status to report, not a crash here
        log.debug("engine %s could not be loaded: %s", point.name, exc)
        return None
    return loaded if isinstance(loaded, type) and issubclass(loaded, Engine) else None


class EngineRegistry:
    """Holds one instance of each engine, its latest probe and its latest failure."""

    def __init__(self, engines: dict[str, Engine | Exception]) -> None:
        self._states: dict[str, EngineState] = {}
        for name, engine in engines.items():
            if isinstance(engine, Exception):
                self._states[name] = EngineState(None, ProbeResult(False, f"engine plugin failed to load: {engine}"))
            else:
                self._states[name] = EngineState(engine, engine.probe())

    @classmethod
    def discover(cls) -> EngineRegistry:
        found: dict[str, Engine | Exception] = {}
        for point in entry_points(group=ENTRY_POINT_GROUP):
            try:
                found[point.name] = point.load()()
            except Exception as exc:  # a broken plugin is a status, not a crash
                log.warning("engine %s could not be loaded: %s", point.name, exc)
                found[point.name] = exc
        return cls(found)

    def names(self) -> list[str]:
        return list(self._states)

    def state(self, name: str) -> EngineState | None:
        return self._states.get(name)

    def reprobe(self, name: str) -> EngineState | None:
        state = self._states.get(name)
        if state is not None and state.engine is not None:
            state.probe = state.engine.probe()
        return state

    def snapshot(self, refresh: bool = False) -> list[dict[str, Any]]:
        """Every engine's status; `refresh` probes each afresh first."""
        if refresh:
            for name in self._states:
                self.reprobe(name)
        return [state.as_dict(name) for name, state in self._states.items()]

    def record_failure(self, name: str, model: str, error: InferrelayError) -> None:
        """Remember the failure; an engine that cannot run at all is marked unavailable until re-probed."""
        state = self._states.get(name)
        if state is None:
            return
        state.last_failure = EngineFailure(error.kind.value, error.message, model)
        engine_wide = error.kind in (ErrorKind.DEPENDENCY_MISSING, ErrorKind.ENGINE_UNAVAILABLE)
        if engine_wide and state.probe.available and not isinstance(error, ModelScopedError):
            state.probe = ProbeResult(False, f"{error.message}; fix: {error.hint}", error=error)
