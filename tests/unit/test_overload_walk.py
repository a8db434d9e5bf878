"""A full queue in the walk: the step is skipped as `overloaded`, the next one answers, and when none is left the
answer is a 429 with Retry-After; an overloaded engine or provider is never counted as failing.

In process, over ASGI, with the app's lifespan running; a model is kept full by work held on its worker (a gate
the test opens), so which queue is full is known exactly.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from inferrelay.config.mappings import MappingsFile
from inferrelay.config.providers import RemoteProvider
from inferrelay.config.schema import ModelSpec, Settings
from inferrelay.engines.registry import EngineRegistry
from inferrelay.errors import ErrorKind
from inferrelay.outcome import Attempt, ChainFailed, Served, chain_failure
from inferrelay.providers.remote import RemoteClient
from inferrelay.routing.resolve import Step
from inferrelay.routing.router import StepRouter
from inferrelay.server.app import create_app
from inferrelay.server.errors import error_response
from inferrelay.server.relay import Relay
from tests.unit.conftest import NamedFake, spec
from tests.unit.test_slot_queue import Gate

HI = {"messages": [{"role": "user", "content": "hello there"}]}
CHAIN = MappingsFile.model_validate(
    {
        "exact_matches": {"burst": {"chain": "busy-then-spare"}},
        "fallback_chains": {
            "busy-then-spare": [{"provider": "local", "model": "a"}, {"provider": "local", "model": "b"}]
        },
    }
)


def app_with(tmp_path: Path, models: list[ModelSpec], **settings: Any) -> tuple[FastAPI, dict[str, NamedFake]]:
    fakes = {"busy": NamedFake("busy"), "spare": NamedFake("spare")}
    app = create_app(Settings(models=models, home=tmp_path / "home", **settings), EngineRegistry(dict(fakes)))
    return app, fakes


def queued(name: str, engines: list[str], max_queue: int = 0) -> ModelSpec:
    return spec(name, engines).model_copy(update={"max_queue": max_queue})


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://inferrelay.test") as client:
            yield client


class Holder:
    """Loads a model's engine and keeps its one runner busy, so that with max_queue 0 its queue is full."""

    def __init__(self, relay: Relay) -> None:
        self._relay = relay
        self._held: list[tuple[Gate, asyncio.Task[str]]] = []

    async def hold(self, model: str, engine: str) -> None:
        spec_ = self._relay.catalog.get(model)
        state = self._relay.registry.state(engine)
        assert spec_ is not None
        assert state is not None
        assert state.engine is not None
        slot = await self._relay.pool.slot(spec_, state.engine)
        gate = Gate()
        self._held.append((gate, asyncio.create_task(slot.call(gate))))
        await gate.running()

    async def release(self) -> None:
        for gate, task in self._held:
            gate.open.set()
            assert await task == "done"
        self._held.clear()


def ask(client: httpx.AsyncClient, model: str, **extra: Any) -> Any:
    return client.post("/v1/chat/completions", json={"model": model, **HI, **extra})


async def gauge(client: httpx.AsyncClient, name: str, **labels: str) -> float | None:
    text = (await client.get("/metrics")).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return None


def test_a_full_queue_is_skipped_and_the_next_engine_answers_without_counting_a_failure(tmp_path: Path) -> None:
    app, fakes = app_with(tmp_path, [queued("m", ["busy", "spare"])])
    relay: Relay = app.state.relay

    async def scenario() -> None:
        async with serving(app) as client:
            holder = Holder(relay)
            await holder.hold("m", "busy")
            try:
                response = await ask(client, "m")
                assert response.status_code == 200, response.text
                assert response.headers["x-inferrelay-backend"] == "local/spare"
                assert response.headers["x-inferrelay-attempts"] == "local/busy=overloaded"
                assert not response.headers.get("x-inferrelay-remediation"), "no remediation step for a full queue"

                engines = {e["name"]: e for e in (await client.get("/api/v1/engines")).json()["engines"]}
                assert engines["busy"]["last_failure"] is None
                assert relay.pool.crashes.wait(("m", "busy")) is None
                assert {s.placement.engine for s in relay.pool.loaded("m")} == {"busy", "spare"}, "busy stays loaded"
                assert fakes["busy"].loads == 1

                not_ready = await client.get("/ready")
                assert not_ready.status_code == 503
                assert not_ready.json()["ready"] is False
                assert any(r.startswith("m on busy: queue full") for r in not_ready.json()["reasons"])
                assert await gauge(client, "inferrelay:num_requests_running", model_name="m") == 1
                assert await gauge(client, "inferrelay:num_requests_waiting", model_name="m") == 0
                queue = (await client.get("/api/v1/runtime/stats")).json()["models"]["m"]["queue"]
                assert queue == {
                    "waiting": 0,
                    "running": 1,
                    "max_queue": 0,
                    "parallel": 1,
                    "batches": 0,
                    "batched_requests": 0,
                }
            finally:
                await holder.release()
            ready = await client.get("/ready")
            assert ready.status_code == 200, ready.text
            assert ready.json()["ready"] is True
            assert await gauge(client, "inferrelay:num_requests_running", model_name="m") == 0

    asyncio.run(scenario())


def test_when_every_engine_is_full_the_answer_is_429_with_retry_after(tmp_path: Path) -> None:
    app, _ = app_with(tmp_path, [queued("m", ["busy"])])
    relay: Relay = app.state.relay

    async def scenario() -> None:
        async with serving(app) as client:
            holder = Holder(relay)
            await holder.hold("m", "busy")
            try:
                for stream in (False, True):
                    response = await ask(client, "m", stream=stream)
                    assert response.status_code == 429, response.text
                    assert response.headers["retry-after"] == "1"
                    assert response.headers["x-inferrelay-attempts"] == "local/busy=overloaded"
                    error = response.json()["error"]
                    assert (error["code"], error["type"]) == ("overloaded", "rate_limit_error")
                    assert "queue is full" in error["hint"]
            finally:
                await holder.release()
            engines = {e["name"]: e for e in (await client.get("/api/v1/engines")).json()["engines"]}
            assert engines["busy"]["last_failure"] is None
            after = await ask(client, "m")
            assert after.status_code == 200, after.text
            assert after.headers["x-inferrelay-attempts"] == ""

    asyncio.run(scenario())


def test_a_full_model_passes_to_the_next_step_of_the_chain_and_all_full_is_429(tmp_path: Path) -> None:
    app, _ = app_with(tmp_path, [queued("a", ["busy"]), queued("b", ["spare"])], routes=CHAIN)
    relay: Relay = app.state.relay

    async def scenario() -> None:
        async with serving(app) as client:
            holder = Holder(relay)
            await holder.hold("a", "busy")
            try:
                response = await ask(client, "burst")
                assert response.status_code == 200, response.text
                assert response.headers["x-inferrelay-backend"] == "local/spare"
                assert response.headers["x-inferrelay-attempts"] == "local/busy=overloaded"
                await holder.hold("b", "spare")
                refused = await ask(client, "burst")
                assert refused.status_code == 429, refused.text
                assert refused.headers["retry-after"] == "1"
                assert refused.headers["x-inferrelay-attempts"] == "local/busy=overloaded,local/spare=overloaded"
                assert refused.json()["error"]["code"] == "overloaded"
            finally:
                await holder.release()

    asyncio.run(scenario())


def test_with_fallback_off_a_full_queue_answers_429_at_once(tmp_path: Path) -> None:
    app, fakes = app_with(tmp_path, [queued("m", ["busy", "spare"])], fallback=False)

    async def scenario() -> None:
        async with serving(app) as client:
            holder = Holder(app.state.relay)
            await holder.hold("m", "busy")
            try:
                response = await ask(client, "m")
                assert response.status_code == 429, response.text
                assert response.headers["retry-after"] == "1"
            finally:
                await holder.release()

    asyncio.run(scenario())
    assert fakes["spare"].loads == 0


def test_a_provider_at_max_in_flight_is_skipped_as_overloaded_and_never_cools_down(tmp_path: Path) -> None:
    capped = RemoteProvider(type="vllm", base_url="http://127.0.0.1:9/v1", max_in_flight=1)
    spare = RemoteProvider(type="vllm", base_url="http://127.0.0.1:9/v1")
    router = StepRouter(Settings(models=[], home=tmp_path, providers={"capped": capped, "spare": spare}))
    release = asyncio.Event()

    async def local(spec: ModelSpec) -> Served[str]:
        raise AssertionError("no local step")

    async def remote(client: RemoteClient, model: str) -> str:
        if client.name == "capped":
            await asyncio.wait_for(release.wait(), 10)
        return client.name

    async def scenario() -> ChainFailed:
        first = asyncio.create_task(router.serve("m", [Step("capped", "m")], local, remote))
        await asyncio.sleep(0)
        assert router.book["capped"].in_flight == 1
        second = await router.serve("m", [Step("capped", "m"), Step("spare", "m")], local, remote)
        assert (second.backend, [a.kind for a in second.attempts]) == ("spare", [ErrorKind.OVERLOADED])
        with pytest.raises(ChainFailed) as refused:
            await router.serve("m", [Step("capped", "m")], local, remote)
        release.set()
        assert (await first).backend == "capped"
        assert (await router.serve("m", [Step("capped", "m")], local, remote)).attempts == []
        await router.aclose()
        return refused.value

    failed = asyncio.run(scenario())
    assert failed.kind is ErrorKind.OVERLOADED
    response = error_response(failed)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"
    assert response.headers["x-inferrelay-attempts"] == "capped=overloaded"
    assert router.cooldowns.status("capped")["consecutive_failures"] == 0
    assert not router.cooldowns.cooling("capped")
    assert router.book["capped"].failures == 0
    assert router.book["capped"].requests == 2, "the skipped requests never reached it"


def attempt(kind: ErrorKind, retry_after: float | None = None) -> Attempt:
    return Attempt("x", kind, "why", "hint", retry_after)


@pytest.mark.parametrize(
    ("kinds", "expected", "wait"),
    [
        ([ErrorKind.OVERLOADED, ErrorKind.OVERLOADED], ErrorKind.OVERLOADED, 1.0),
        ([ErrorKind.RATE_LIMITED, ErrorKind.RATE_LIMITED], ErrorKind.RATE_LIMITED, 1.0),
        ([ErrorKind.RATE_LIMITED, ErrorKind.OVERLOADED], ErrorKind.OVERLOADED, 1.0),
        ([ErrorKind.UNSUPPORTED, ErrorKind.OVERLOADED], ErrorKind.OVERLOADED, 1.0),
        ([ErrorKind.TRANSIENT, ErrorKind.OVERLOADED], ErrorKind.ALL_BACKENDS_FAILED, None),
        ([ErrorKind.UNSUPPORTED], ErrorKind.UNSUPPORTED, None),
    ],
)
def test_the_end_of_a_walk_is_429_only_when_every_step_was_busy(
    kinds: list[ErrorKind], expected: ErrorKind, wait: float | None
) -> None:
    error = chain_failure("model 'm'", "backend", [attempt(kind) for kind in kinds])
    assert (error.kind, error.retry_after) == (expected, wait)


def test_the_shortest_wait_is_the_one_told() -> None:
    attempts = [attempt(ErrorKind.RATE_LIMITED, 30.0), attempt(ErrorKind.OVERLOADED, 1.0)]
    error = chain_failure("model 'm'", "backend", attempts)
    assert (error.kind, error.retry_after, error.status) == (ErrorKind.OVERLOADED, 1.0, 429)
