"""What happens when Redis does not answer: fail open (each server on its own state) or fail closed (429).

Either way nothing becomes a 5xx. While Redis is down it is asked again at most once a second; the first answer
switches every operation back to it. Each failure is counted, and each outage logged once when it begins and ends.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Literal, TypeVar

from inferrelay.state.base import (
    Admission,
    Draw,
    KeyLimits,
    KeyVerdict,
    ProviderView,
    StateUnavailable,
    StoreDown,
)
from inferrelay.state.local import LocalState
from inferrelay.state.redis_store import RedisState

T = TypeVar("T")
RETRY_S = 1.0
"""How long a down Redis is left alone before it is asked again."""

log = logging.getLogger("inferrelay.state")


class FailoverState:
    def __init__(
        self,
        shared: RedisState,
        policy: Literal["open", "closed"],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._shared = shared
        self._local = LocalState(clock)  # written along with Redis, so an outage starts from what is known
        self._policy = policy
        self._clock = clock
        self._down_since: float | None = None
        self._retry_at = 0.0
        self.failures = 0  # calls Redis failed
        self.fallbacks = 0  # operations answered without Redis (locally, or refused)

    async def take(self, draws: list[Draw]) -> float:
        return await self._ask(lambda: self._shared.take(draws), lambda: self._local.take_now(draws), closes=True)

    async def view(self, provider: str) -> ProviderView:
        return await self._ask(lambda: self._shared.view(provider), lambda: self._local.view_now(provider), closes=True)

    async def admit(self, provider: str, draws: list[Draw]) -> Admission:
        return await self._ask(
            lambda: self._shared.admit(provider, draws), lambda: self._local.admit_now(provider, draws), closes=True
        )

    async def share_in_flight(self, mine: dict[str, int]) -> dict[str, int]:
        return await self._ask(lambda: self._shared.share_in_flight(mine), lambda: dict(mine), closes=False)

    async def cool(self, provider: str, seconds: float) -> None:
        self._local.cool_now(provider, seconds)
        await self._ask(lambda: self._shared.cool(provider, seconds), lambda: None, closes=False)

    async def set_healthy(self, provider: str, healthy: bool, ttl_s: float) -> None:
        self._local.set_healthy_now(provider, healthy, ttl_s)
        await self._ask(lambda: self._shared.set_healthy(provider, healthy, ttl_s), lambda: None, closes=False)

    async def admit_key(self, key: KeyLimits, seed: int, local: Callable[[], KeyVerdict]) -> KeyVerdict:
        return await self._ask(lambda: self._shared.admit_key(key, seed, local), local, closes=True)

    async def spend_key(self, key: KeyLimits, tokens: int, seed: int, local: Callable[[], int]) -> int:
        return await self._ask(lambda: self._shared.spend_key(key, tokens, seed, local), local, closes=False)

    async def key_spent(self, name: str, seed: int, local: Callable[[], int]) -> int:
        return await self._ask(lambda: self._shared.key_spent(name, seed, local), local, closes=False)

    def status(self) -> dict[str, object]:
        return {
            **self._shared.status(),
            "reachable": self._down_since is None,
            "on_failure": self._policy,
            "failures": self.failures,
            "fallbacks": self.fallbacks,
        }

    async def aclose(self) -> None:
        await self._shared.aclose()

    async def _ask(self, shared: Callable[[], Awaitable[T]], local: Callable[[], T], *, closes: bool) -> T:
        """Redis's answer; while it is down, this process's own (fail open) or a 429 (fail closed, admissions)."""
        now = self._clock()
        if self._down_since is None or now >= self._retry_at:
            try:
                answer = await shared()
            except StoreDown as exc:
                self.failures += 1
                self._retry_at = now + RETRY_S
                if self._down_since is None:
                    self._down_since = now
                    log.warning("shared state unreachable (%s): failing %s until it answers", exc, self._policy)
            else:
                if self._down_since is not None:
                    log.warning("shared state answers again after %.1f s", now - self._down_since)
                    self._down_since = None
                return answer
        self.fallbacks += 1
        if closes and self._policy == "closed":
            raise StateUnavailable("the shared state (Redis) does not answer and state_failure is closed", RETRY_S)
        return local()
