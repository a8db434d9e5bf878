"""The routing state of one process: what inferrelay keeps when no Redis is configured.

A key's allowance in process is access/quota.py's own (KeyQuota): the key operations here hand back its answer."""

from __future__ import annotations

import time
from collections.abc import Callable

from inferrelay.state.base import Admission, Draw, KeyLimits, KeyVerdict, ProviderView
from inferrelay.token_bucket import TokenBucket


class LocalState:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        self._cool_until: dict[str, float] = {}
        self._health: dict[str, tuple[bool, float]] = {}  # provider -> (healthy, valid until)

    async def take(self, draws: list[Draw]) -> float:
        return self.take_now(draws)

    def take_now(self, draws: list[Draw]) -> float:
        buckets = [(self._bucket(draw), draw.amount) for draw in draws]
        wait = max((bucket.wait_for(amount) for bucket, amount in buckets), default=0.0)
        if wait > 0:
            return wait
        for bucket, amount in buckets:
            bucket.take(amount)
        return 0.0

    async def view(self, provider: str) -> ProviderView:
        return self.view_now(provider)

    def view_now(self, provider: str) -> ProviderView:
        now = self._clock()
        health = self._health.get(provider)
        healthy = health[0] if health is not None and health[1] > now else None
        return ProviderView(healthy, max(0.0, self._cool_until.get(provider, 0.0) - now))

    async def admit(self, provider: str, draws: list[Draw]) -> Admission:
        return self.admit_now(provider, draws)

    def admit_now(self, provider: str, draws: list[Draw]) -> Admission:
        view = self.view_now(provider)
        if view.healthy is False or view.cooldown_left > 0:
            return Admission(view)
        return Admission(view, self.take_now(draws))

    async def share_in_flight(self, mine: dict[str, int]) -> dict[str, int]:
        return dict(mine)

    async def cool(self, provider: str, seconds: float) -> None:
        self.cool_now(provider, seconds)

    def cool_now(self, provider: str, seconds: float) -> None:
        until = self._clock() + seconds
        self._cool_until[provider] = max(self._cool_until.get(provider, 0.0), until)

    async def set_healthy(self, provider: str, healthy: bool, ttl_s: float) -> None:
        self.set_healthy_now(provider, healthy, ttl_s)

    def set_healthy_now(self, provider: str, healthy: bool, ttl_s: float) -> None:
        self._health[provider] = (healthy, self._clock() + ttl_s)

    async def admit_key(self, key: KeyLimits, seed: int, local: Callable[[], KeyVerdict]) -> KeyVerdict:
        return local()

    async def spend_key(self, key: KeyLimits, tokens: int, seed: int, local: Callable[[], int]) -> int:
        return local()

    async def key_spent(self, name: str, seed: int, local: Callable[[], int]) -> int:
        return local()

    def status(self) -> dict[str, object]:
        return {"backend": "process", "shared": False}

    async def aclose(self) -> None:
        return None

    def _bucket(self, draw: Draw) -> TokenBucket:
        bucket = self._buckets.get(draw.bucket)
        if bucket is None or bucket.per_minute != draw.per_minute:
            bucket = self._buckets[draw.bucket] = TokenBucket(draw.per_minute, self._clock)
        return bucket
