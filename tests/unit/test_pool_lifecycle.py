"""The pool's policies, driven by the fake engine as a fault injector and a clock the test sets.

Real engines and real memory figures are in tests/e2e/test_runtime.py; here
the question is only what the pool decides: one load for many waiters,
keep_alive, and a model whose load runs out of GPU memory moved to the CPU (that load only).
"""

from __future__ import annotations

import asyncio
from collections import deque
from pathlib import Path
from typing import Any

import pytest

from inferrelay.config.schema import ModelSpec, Settings
from inferrelay.engines.base import Capability, GenerationRequest
from inferrelay.engines.fake import FakeEngine
from inferrelay.engines.registry import EngineRegistry
from inferrelay.errors import ErrorKind
from inferrelay.outcome import ChainFailed
from inferrelay.routing.fallback import FallbackChain
from inferrelay.runtime.pool import ModelPool


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fake_spec(name: str = "f", **fields: object) -> ModelSpec:
    base: dict[str, object] = {"name": name, "source": "fake", "capabilities": [Capability.CHAT], "engines": ["fake"]}
    return ModelSpec.model_validate(base | fields)


def test_many_waiters_share_one_load(tmp_path: Path) -> None:
    pool = ModelPool(tmp_path, 30)
    spec = fake_spec(engine_options={"fake": {"latency_ms": 1}})

    async def go() -> set[int]:
        slots = await asyncio.gather(*(pool.slot(spec, FakeEngine()) for _ in range(8)))
        return {id(s) for s in slots}

    assert len(asyncio.run(go())) == 1
    assert pool.loads == 1
    pool.close()


def test_keep_alive_expires_on_the_clock_and_negative_never_does(tmp_path: Path) -> None:
    clock = Clock()
    pool = ModelPool(tmp_path, 30, clock=clock)

    async def go() -> list[list[str]]:
        await pool.slot(fake_spec("short", keep_alive=5), FakeEngine())
        await pool.slot(fake_spec("forever", keep_alive=-1), FakeEngine())
        await pool.slot(fake_spec("default"), FakeEngine())  # runtime.keep_alive: 300 s
        seen = []
        for step in (4, 2, 300):
            clock.now += step
            await pool.reap()
            seen.append(sorted(s.spec.name for s in pool.loaded()))
        return seen

    assert asyncio.run(go()) == [["default", "forever", "short"], ["default", "forever"], ["forever"]]
    assert [e.what for e in pool.events] == ["unloaded", "unloaded"]
    pool.close()


def test_a_request_keep_alive_replaces_the_models(tmp_path: Path) -> None:
    clock = Clock()
    pool = ModelPool(tmp_path, 30, clock=clock)

    async def go() -> list[str]:
        await pool.slot(fake_spec(keep_alive=-1), FakeEngine(), keep_alive=10)
        clock.now += 11
        await pool.reap()
        return [s.spec.name for s in pool.loaded()]

    assert asyncio.run(go()) == []


def test_out_of_gpu_memory_at_load_moves_the_model_to_the_cpu(tmp_path: Path) -> None:
    """The walk's ladder at load: no lower precision for this engine, so the CPU, recorded as the request's."""
    pool = ModelPool(tmp_path, 30)
    options = {"fake": {"fail_kind": "out_of_memory", "fail_on": "load", "fail_devices": ["cuda"]}}
    spec = fake_spec(device="cuda", engine_options=options)
    chain = FallbackChain(Settings(models=[spec], home=tmp_path), EngineRegistry.discover(), pool)

    async def device(slot: Any) -> str:
        return str(slot.placement.device)

    served = asyncio.run(chain.serve(spec, Capability.CHAT, device))
    assert served.result == "cpu"
    assert served.attempts == []
    assert [remedy.header() for remedy in served.remedies] == ["local/fake:cpu(cuda -> cpu, to load)"]
    (event,) = pool.events
    assert event.what == "moved_to_cpu"
    assert "ran out of GPU memory" in event.detail
    pool.close()


def test_a_request_out_of_gpu_memory_fails_alone_and_the_model_stays_on_the_gpu(tmp_path: Path) -> None:
    """One request's shortage is not the model's: no move to the CPU for everyone (runtime/remediation.py)."""
    options = {"fake": {"fail_kind": "out_of_memory", "fail_on": "request", "fail_devices": ["cuda"]}}
    spec = fake_spec(device="cuda", engine_options=options)
    pool = ModelPool(tmp_path, 30)
    chain = FallbackChain(Settings(models=[spec], home=tmp_path), EngineRegistry.discover(), pool)

    async def answer(slot: Any) -> str:
        text = await slot.call(lambda: slot.model.generate(GenerationRequest(prompt="hello there", max_tokens=3)))
        return f"{slot.placement.device}: {text.text}"

    with pytest.raises(ChainFailed) as failed:
        asyncio.run(chain.serve(spec, Capability.CHAT, answer))
    assert [attempt.kind for attempt in failed.value.attempts] == [ErrorKind.OUT_OF_MEMORY]
    assert [remedy.step.value for remedy in failed.value.remedies] == ["next_engine"]
    assert [(slot.placement.device, slot.placement.remedied) for slot in pool.loaded()] == [("cuda", False)]
    assert pool.events == deque(), "nothing was moved or reloaded"
    assert pool.planned_device(spec, "fake") == "cuda"
    pool.close()
