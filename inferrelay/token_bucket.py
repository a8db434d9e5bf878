"""A per-minute allowance as a token bucket that refills continuously: a leaf, shared by the providers' limits
(routing/ratelimit.py) and the keys' (access/quota.py)."""

from __future__ import annotations

from collections.abc import Callable


class TokenBucket:
    """Holds at most a minute's allowance; refills at allowance/60 per second."""

    def __init__(self, per_minute: int, clock: Callable[[], float]) -> None:
        self.per_minute = per_minute
        self._capacity = float(per_minute)
        self._rate = per_minute / 60.0
        self._tokens = float(per_minute)
        self._clock = clock
        self._at = clock()

    def wait_for(self, amount: float) -> float:
        """Seconds until `amount` is available (0: available now); nothing is taken."""
        now = self._clock()
        self._tokens = min(self._capacity, self._tokens + (now - self._at) * self._rate)
        self._at = now
        amount = min(amount, self._capacity)  # a request larger than a minute's allowance waits for a full bucket
        return 0.0 if self._tokens >= amount else (amount - self._tokens) / self._rate

    def take(self, amount: float) -> None:
        self._tokens -= min(amount, self._capacity)

    def debit(self, amount: float) -> None:
        """Take all of `amount`, below zero if need be: what an answer used, known only after it."""
        self._tokens -= amount
