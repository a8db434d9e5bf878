"""The shared state's contract, kept alike in process and in a real Redis; and the policy when Redis is gone."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import NoReturn, TypeVar

import pytest

from inferrelay.state.base import Draw, KeyLimits, KeyVerdict, SharedState, StateUnavailable
from inferrelay.state.failover import FailoverState
from inferrelay.state.local import LocalState
from inferrelay.state.redis_store import RedisState, redacted
from tests.redis_server import RedisServer, running_redis

T = TypeVar("T")
redis_server = pytest.fixture(running_redis)


def run(make: Callable[[], SharedState], check: Callable[[SharedState], Awaitable[T]]) -> T:
    async def go() -> T:
        state = make()
        try:
            return await check(state)
        finally:
            await state.aclose()

    return asyncio.run(go())


async def buckets_take_all_or_nothing(state: SharedState) -> None:
    rpm, tpm = Draw("up:rpm", 10, 1), Draw("up:tpm", 100, 60)
    assert await state.take([rpm, tpm]) == 0
    wait = await state.take([rpm, tpm])  # 40 tokens left: refused, and the request is not counted
    assert wait == pytest.approx(20 / (100 / 60), rel=0.05)
    assert await state.take([rpm, Draw("up:tpm", 100, 40)]) == 0
    for _ in range(8):
        assert await state.take([rpm]) == 0
    assert await state.take([rpm]) > 5, "the 11th request of rpm 10 waits about 6 s"


async def cooldown_and_health(state: SharedState) -> None:
    assert (await state.view("up")).cooldown_left == 0
    assert (await state.view("up")).healthy is None, "never checked: no opinion"
    await state.cool("up", 30)
    await state.cool("up", 5)  # a shorter cooldown never shortens an open one
    assert 25 < (await state.view("up")).cooldown_left <= 30
    await state.set_healthy("up", False, ttl_s=30)
    assert (await state.view("up")).healthy is False
    assert (await state.view("other")).cooldown_left == 0


async def admission_draws_only_where_the_step_goes(state: SharedState) -> None:
    rpm = [Draw("up:rpm", 2, 1)]
    first = await state.admit("up", rpm)
    assert (first.view.healthy, first.view.cooldown_left, first.wait) == (None, 0, 0)
    await state.cool("up", 30)
    cooling = await state.admit("up", rpm)
    assert cooling.view.cooldown_left > 25, "skipped for its cooldown..."
    assert await state.take(rpm) == 0, "...and nothing was drawn: the second request of rpm 2 is still there"
    await state.set_healthy("down", False, ttl_s=30)
    assert (await state.admit("down", [Draw("down:rpm", 1, 1)])).view.healthy is False
    assert await state.take([Draw("down:rpm", 1, 1)]) == 0, "an unhealthy provider's request draws nothing"
    assert (await state.admit("other", [Draw("other:rpm", 1, 1)])).wait == 0
    assert (await state.admit("other", [Draw("other:rpm", 1, 1)])).wait > 0


CHECKS = [buckets_take_all_or_nothing, cooldown_and_health, admission_draws_only_where_the_step_goes]


@pytest.mark.parametrize("check", CHECKS)
def test_in_process(check: Callable[[SharedState], Awaitable[None]]) -> None:
    run(LocalState, check)


@pytest.mark.parametrize("check", CHECKS)
def test_in_redis(check: Callable[[SharedState], Awaitable[None]], redis_server: RedisServer) -> None:
    run(lambda: RedisState(redis_server.url), check)


def test_two_clients_of_one_redis_share_a_bucket(redis_server: RedisServer) -> None:
    async def go() -> list[float]:
        first, second = RedisState(redis_server.url), RedisState(redis_server.url)
        draws = [Draw("shared:rpm", 10, 1)]
        waits = await asyncio.gather(*(s.take(draws) for _ in range(15) for s in (first, second)))
        await first.aclose()
        await second.aclose()
        return list(waits)

    waits = asyncio.run(go())
    assert sum(1 for wait in waits if wait == 0) == 10, "30 draws on rpm 10 from two clients: exactly 10 taken"


def test_redis_gone_fails_open_then_shares_again(redis_server: RedisServer) -> None:
    clock = [0.0]

    async def go() -> None:
        state = FailoverState(RedisState(redis_server.url), "open", clock=lambda: clock[0])
        await state.cool("up", 60)
        redis_server.kill()
        assert (await state.view("up")).cooldown_left > 0, "open: this process's own record of the cooldown"
        assert await state.take([Draw("up:rpm", 10, 1)]) == 0, "open: this process's own bucket"
        assert state.status()["reachable"] is False
        assert state.failures == 1, "asked once, then left alone for a second"
        redis_server.start()  # empty: nothing survived
        assert (await state.view("up")).cooldown_left > 0, "still within the second: not asked again"
        clock[0] += 1.5
        assert (await state.view("up")).cooldown_left == 0, "Redis answers again, and its (empty) state counts"
        assert state.status()["reachable"] is True
        await state.aclose()

    asyncio.run(go())


def test_redis_gone_fails_closed_with_a_429_reason(redis_server: RedisServer) -> None:
    async def go() -> None:
        state = FailoverState(RedisState(redis_server.url), "closed")
        redis_server.kill()
        with pytest.raises(StateUnavailable) as refused:
            await state.take([Draw("up:rpm", 10, 1)])
        assert refused.value.retry_after > 0
        with pytest.raises(StateUnavailable):
            await state.view("up")
        await state.cool("up", 5)  # writes are dropped, never raised
        assert state.status()["failures"] == 1
        await state.aclose()

    asyncio.run(go())


def test_the_password_is_never_shown() -> None:
    assert redacted("redis://user:secret@cache:6379/2") == "redis://***@cache:6379/2"
    assert redacted("redis://cache:6379/0") == "redis://cache:6379/0"


def test_in_flight_counts_add_up_across_servers_and_a_silent_one_stops_counting(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from inferrelay.state import redis_store

    async def go() -> None:
        first, second = RedisState(redis_server.url), RedisState(redis_server.url)
        assert await first.share_in_flight({"x": 3, "y": 0}) == {"x": 3, "y": 0}
        assert await second.share_in_flight({"x": 1, "y": 2}) == {"x": 4, "y": 2}
        monkeypatch.setattr(redis_store, "IN_FLIGHT_TTL_MS", 100)
        await second.share_in_flight({"x": 1, "y": 2})  # renewed for 100 ms; the first's 3 s still run
        assert await LocalState().share_in_flight({"x": 1}) == {"x": 1}
        await first.share_in_flight({"x": 3, "y": 0})
        await asyncio.sleep(0.3)  # the second server falls silent past its keys' expiry
        assert await first.share_in_flight({"x": 3, "y": 0}) == {"x": 3, "y": 0}
        await first.aclose()
        await second.aclose()

    asyncio.run(go())


def test_a_keys_allowance_is_one_for_every_client_of_one_redis(redis_server: RedisServer) -> None:
    async def go() -> None:
        first, second = RedisState(redis_server.url), RedisState(redis_server.url)
        key = KeyLimits("ci", rpm=5)
        verdicts = await asyncio.gather(*(s.admit_key(key, 0, never) for _ in range(5) for s in (first, second)))
        assert sorted(v.limit or "taken" for v in verdicts) == ["rpm"] * 5 + ["taken"] * 5
        assert all(11 < v.wait <= 12 for v in verdicts if v.limit == "rpm"), "one request every 12 s"
        await first.aclose()
        await second.aclose()

    asyncio.run(go())


def test_a_keys_spent_count_is_seeded_once_and_refuses_past_the_budget(redis_server: RedisServer) -> None:
    async def go() -> None:
        first, second = RedisState(redis_server.url), RedisState(redis_server.url)
        key = KeyLimits("ci", budget=100)
        assert (await first.admit_key(key, 60, never)).spent == 60, "missing: the first server's log starts it"
        assert (await second.admit_key(key, 60, never)).spent == 60, "present: the second's log is not added"
        assert await second.spend_key(key, 30, 60, never) == 90
        assert await first.key_spent("ci", 0, never) == 90
        assert (await first.admit_key(key, 0, never)).limit is None
        assert await first.spend_key(key, 15, 0, never) == 105, "an answer may overshoot the budget"
        assert await second.admit_key(key, 0, never) == KeyVerdict(105, "budget", 0.0)
        assert await second.key_spent("fresh", 7, never) == 7
        assert await second.spend_key(KeyLimits("newer"), 5, 20, never) == 25, "seeded before the first answer"
        await first.aclose()
        await second.aclose()

    asyncio.run(go())


def test_a_keys_tpm_is_checked_at_admission_and_taken_when_the_answer_is_done(redis_server: RedisServer) -> None:
    async def go() -> None:
        state = RedisState(redis_server.url)
        key = KeyLimits("ci", tpm=600)
        assert (await state.admit_key(key, 0, never)).limit is None
        assert (await state.admit_key(key, 0, never)).limit is None, "admission takes no tokens"
        await state.spend_key(key, 700, 0, never)  # one answer overshoots: 100 below zero
        refused = await state.admit_key(key, 0, never)
        assert refused.limit == "tpm"
        assert refused.wait == pytest.approx(10.1, abs=0.2), "101 tokens at 10 a second"
        await state.aclose()

    asyncio.run(go())


def test_key_operations_in_process_are_the_callers_own() -> None:
    async def go() -> None:
        state = LocalState()
        assert await state.admit_key(KeyLimits("ci", rpm=1), 0, lambda: KeyVerdict(3, "rpm", 2.0)) == KeyVerdict(
            3, "rpm", 2.0
        )
        assert await state.spend_key(KeyLimits("ci"), 5, 0, lambda: 8) == 8
        assert await state.key_spent("ci", 0, lambda: 8) == 8

    asyncio.run(go())


def test_redis_gone_a_keys_admission_fails_open_to_its_own_count_or_closed(redis_server: RedisServer) -> None:
    async def go() -> None:
        opened = FailoverState(RedisState(redis_server.url), "open")
        closed = FailoverState(RedisState(redis_server.url), "closed")
        redis_server.kill()
        key = KeyLimits("ci", rpm=5)
        assert await opened.admit_key(key, 0, lambda: KeyVerdict(4)) == KeyVerdict(4), "open: this process's own"
        assert await opened.spend_key(key, 3, 0, lambda: 7) == 7
        assert opened.status()["fallbacks"] == 2
        with pytest.raises(StateUnavailable):
            await closed.admit_key(key, 0, lambda: KeyVerdict(4))
        assert await closed.spend_key(key, 3, 0, lambda: 7) == 7, "an answer already given is counted here"
        assert await closed.key_spent("ci", 0, lambda: 7) == 7
        await opened.aclose()
        await closed.aclose()

    asyncio.run(go())


def never() -> NoReturn:
    raise AssertionError("Redis answers: this process's own count is not asked for")
