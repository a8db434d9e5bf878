"""rpm/tpm limits hold: over the limit, the next step serves, or a 429 with Retry-After says when to come back."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from inferrelay.config.providers import RateLimits, RemoteProvider
from inferrelay.config.schema import ModelSpec, Settings
from inferrelay.errors import ErrorKind
from inferrelay.outcome import ChainFailed, Served
from inferrelay.providers.remote import RemoteClient
from inferrelay.routing.ratelimit import RateLimiter, estimate_tokens
from inferrelay.routing.resolve import Step
from inferrelay.routing.router import StepRouter
from inferrelay.server.errors import error_response
from inferrelay.state.local import LocalState
from inferrelay.token_bucket import TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def provider(rpm: int | None = None, tpm: int | None = None) -> RemoteProvider:
    return RemoteProvider(type="vllm", base_url="http://127.0.0.1:9/v1", rate_limits=RateLimits(rpm=rpm, tpm=tpm))


def test_bucket_refills_continuously() -> None:
    clock = Clock()
    bucket = TokenBucket(60, clock)  # one a second
    for _ in range(60):
        assert bucket.wait_for(1) == 0
        bucket.take(1)
    assert bucket.wait_for(1) == pytest.approx(1.0)
    clock.now += 0.5
    assert bucket.wait_for(1) == pytest.approx(0.5)
    clock.now += 0.5
    assert bucket.wait_for(1) == 0


def test_rpm_and_tpm_both_hold_and_a_refusal_takes_nothing() -> None:
    clock = Clock()
    limits = RateLimiter({"up": provider(rpm=10, tpm=100)}, LocalState(clock))
    assert asyncio.run(limits.admit("up", 60)) == 0
    wait = asyncio.run(limits.admit("up", 60))  # 40 tokens left: refused, and the request is not counted
    assert wait == pytest.approx(20 / (100 / 60))
    assert asyncio.run(limits.admit("up", 40)) == 0
    assert asyncio.run(limits.admit("elsewhere", 10**6)) == 0, "no limits configured: no limit"


def test_estimate_counts_text_and_answer_budget() -> None:
    body = {"messages": [{"role": "user", "content": "x" * 400}], "max_tokens": 50}
    assert 150 <= estimate_tokens(body) <= 170


def run_router(tmp_path: Path, steps: list[Step], requests: int) -> tuple[list[str], ChainFailed | None]:
    settings = Settings(models=[], home=tmp_path, providers={"a": provider(rpm=2), "b": provider()})
    router = StepRouter(settings, clock=Clock())
    served: list[str] = []

    async def local(spec: ModelSpec) -> Served[str]:
        raise AssertionError("no local step")

    async def remote(client: RemoteClient, model: str) -> str:
        return client.name  # the router's contract: whatever the route does with the client

    async def go() -> ChainFailed | None:
        try:
            for _ in range(requests):
                served.append((await router.serve("m", steps, local, remote)).backend)
        except ChainFailed as failed:
            return failed
        finally:
            await router.aclose()
        return None

    return served, asyncio.run(go())


def test_over_the_limit_the_next_step_serves(tmp_path: Path) -> None:
    served, failed = run_router(tmp_path, [Step("a", "m"), Step("b", "m")], 4)
    assert failed is None
    assert served == ["a", "a", "b", "b"]


def test_with_no_next_step_the_answer_is_429_with_retry_after(tmp_path: Path) -> None:
    served, failed = run_router(tmp_path, [Step("a", "m")], 3)
    assert served == ["a", "a"]
    assert failed is not None
    assert failed.kind is ErrorKind.RATE_LIMITED
    response = error_response(failed)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "30"  # rpm 2: one request every 30 s
