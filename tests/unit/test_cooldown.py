"""Circuit breaking: opens on repeated or unhealable failures, only extends, one probe closes or reopens."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from inferrelay.config.providers import RemoteProvider
from inferrelay.config.schema import ModelSpec, Settings
from inferrelay.errors import ErrorKind
from inferrelay.outcome import ChainFailed, Served
from inferrelay.providers.remote import RemoteClient
from inferrelay.routing.cooldown import CooldownTracker
from inferrelay.routing.resolve import Step
from inferrelay.routing.router import StepRouter
from tests.conftest import free_port


class Clock:
    """Time as the test says it is: cooldowns are about time, and tests never sleep for it."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def tracker(clock: Clock) -> CooldownTracker:
    return CooldownTracker(allowed_fails=3, clock=clock)


def test_opens_after_allowed_failures_and_not_before() -> None:
    clock = Clock()
    cooldowns = tracker(clock)
    for _ in range(2):
        cooldowns.failed("up", ErrorKind.TRANSIENT, 30)
        assert cooldowns.admit("up")
    cooldowns.failed("up", ErrorKind.TRANSIENT, 30)
    assert not cooldowns.admit("up")
    assert cooldowns.status("up")["state"] == "open"


def test_an_unhealable_failure_opens_at_once() -> None:
    cooldowns = tracker(Clock())
    cooldowns.failed("up", ErrorKind.UPSTREAM_ERROR, 30)
    assert not cooldowns.admit("up")


def test_a_new_failure_extends_but_never_shortens() -> None:
    clock = Clock()
    cooldowns = tracker(clock)
    cooldowns.failed("up", ErrorKind.UPSTREAM_ERROR, 60)
    clock.now += 10
    cooldowns.failed("up", ErrorKind.UPSTREAM_ERROR, 5)  # a shorter cooldown must not shorten the open one
    assert cooldowns.status("up")["cooldown_remaining_s"] == 50
    cooldowns.failed("up", ErrorKind.UPSTREAM_ERROR, 80)
    assert cooldowns.status("up")["cooldown_remaining_s"] == 80


def test_after_the_cooldown_one_probe_closes_it() -> None:
    clock = Clock()
    cooldowns = tracker(clock)
    cooldowns.failed("up", ErrorKind.UPSTREAM_ERROR, 30)
    clock.now += 31
    assert cooldowns.status("up")["state"] == "half_open"
    assert cooldowns.admit("up"), "the probe goes through"
    assert not cooldowns.admit("up"), "only one probe at a time"
    cooldowns.succeeded("up")
    assert cooldowns.admit("up")
    assert cooldowns.status("up")["state"] == "closed"


def test_a_failed_probe_reopens_for_a_full_period() -> None:
    clock = Clock()
    cooldowns = tracker(clock)
    cooldowns.failed("up", ErrorKind.UPSTREAM_ERROR, 30)
    clock.now += 31
    assert cooldowns.admit("up")
    cooldowns.failed("up", ErrorKind.TRANSIENT, 30)  # even a transient failure reopens after a probe
    assert not cooldowns.admit("up")
    assert cooldowns.status("up")["cooldown_remaining_s"] == 30


def test_circuits_are_per_deployment() -> None:
    cooldowns = tracker(Clock())
    cooldowns.failed("a", ErrorKind.UPSTREAM_ERROR, 30)
    assert not cooldowns.admit("a")
    assert cooldowns.admit("b")


def test_when_every_step_cools_down_the_least_recently_failed_is_still_tried(tmp_path: Path) -> None:
    """Two providers on closed ports of 127.0.0.1: real connection failures, no mock."""
    providers = {
        name: RemoteProvider(type="openai_compatible", base_url=f"http://127.0.0.1:{free_port()}/v1", max_retries=0)
        for name in ("a", "b")
    }
    settings = Settings(models=[], home=tmp_path, providers=providers)
    clock = Clock()
    router = StepRouter(settings, CooldownTracker(clock=clock))
    router.cooldowns.failed("b", ErrorKind.UPSTREAM_ERROR, 30)
    clock.now += 1
    router.cooldowns.failed("a", ErrorKind.UPSTREAM_ERROR, 30)
    tried: list[str] = []

    async def local(spec: ModelSpec) -> Served[str]:
        raise AssertionError("no local step here")

    async def remote(client: RemoteClient, model: str) -> str:
        tried.append(client.name)
        return str(await client.post("chat/completions", {}, model, model))

    async def run() -> None:
        with pytest.raises(ChainFailed) as caught:
            await router.serve("m", [Step("a", "m"), Step("b", "m")], local, remote)
        await router.aclose()
        assert [a.kind for a in caught.value.attempts] == [
            ErrorKind.COOLING_DOWN,
            ErrorKind.COOLING_DOWN,
            ErrorKind.TRANSIENT,
        ]

    asyncio.run(run())
    assert tried == ["b"], "b failed longest ago, so b gets the last-resort try"
