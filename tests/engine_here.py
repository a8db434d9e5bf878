"""The installed engine a test needs, or a skip that says why it cannot run here."""

from __future__ import annotations

import pytest

from inferrelay.engines.base import Engine
from inferrelay.engines.registry import EngineRegistry


def engine_or_skip(name: str) -> Engine:
    state = EngineRegistry.discover().state(name)
    assert state is not None, f"no engine named {name}"
    if state.engine is None:
        pytest.skip(f"{name} engine unavailable: {state.probe.reason}")
    return state.engine
