"""The state several servers may share: providers' rate-limit buckets, cooldowns, health; keys' limits and budgets
(docs/scaling.md).

One contract, two implementations: in process (state/local.py) and in Redis (state/redis_store.py), the latter behind
the failure policy of state/failover.py. The router holds a `SharedState` and never asks which one it has.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Draw:
    """`amount` taken from the per-minute bucket `bucket` (a minute's allowance `per_minute`)."""

    bucket: str
    per_minute: int
    amount: float


@dataclass(frozen=True)
class ProviderView:
    """What every server knows of a provider: its last health result (None: never checked) and cooldown left."""

    healthy: bool | None = None
    cooldown_left: float = 0.0


@dataclass(frozen=True)
class Admission:
    """A provider's view and the rate-limit draws: taken (`wait` 0) only when the view lets the request go."""

    view: ProviderView
    wait: float = 0.0


@dataclass(frozen=True)
class KeyLimits:
    """An API key's allowance as the shared state applies it (access/quota.py); None: no such limit."""

    name: str
    rpm: int | None = None
    tpm: int | None = None
    budget: int | None = None


@dataclass(frozen=True)
class KeyVerdict:
    """A key's request: admitted (`limit` None, one request taken from its rpm), or refused for its `limit`
    ('budget', 'tpm' or 'rpm') with the seconds until it allows one (`wait`; 0 for the budget, which never refills).
    `spent`: every token the key's answers reported, as the state counts them."""

    spent: int
    limit: str | None = None
    wait: float = 0.0


class StoreDown(Exception):
    """The shared store did not answer (refused, timed out, gone)."""


class StateUnavailable(Exception):
    """The shared store cannot answer and the policy is to fail closed: the caller gets a 429."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SharedState(Protocol):
    async def take(self, draws: list[Draw]) -> float:
        """Take every draw at once, or none and say how many seconds until all fit (0: taken)."""

    async def view(self, provider: str) -> ProviderView: ...

    async def admit(self, provider: str, draws: list[Draw]) -> Admission:
        """One request's question, in one round trip: the provider's view and, unless it is unhealthy or cooling
        down, the draws taken (or none, with the wait)."""

    async def share_in_flight(self, mine: dict[str, int]) -> dict[str, int]:
        """Publish this server's requests in flight per provider; the totals of every server sharing the state."""

    async def cool(self, provider: str, seconds: float) -> None:
        """Open the provider's cooldown for `seconds` for every server (extends it, never shortens it)."""

    async def set_healthy(self, provider: str, healthy: bool, ttl_s: float) -> None: ...

    async def admit_key(self, key: KeyLimits, seed: int, local: Callable[[], KeyVerdict]) -> KeyVerdict:
        """A key's request, in one round trip: its budget and tpm checked, one request taken from its rpm.
        `seed`: the tokens this process knows the key spent, which start a shared count that is missing (never added
        to one that exists); `local`: this process's own answer, where the state is its own or does not answer."""

    async def spend_key(self, key: KeyLimits, tokens: int, seed: int, local: Callable[[], int]) -> int:
        """An answer of the key's used `tokens`: added to its spent count and taken from its tpm; the new count."""

    async def key_spent(self, name: str, seed: int, local: Callable[[], int]) -> int:
        """Every token the key's answers reported, as the state counts them."""

    def status(self) -> dict[str, object]:
        """GET /api/v1/providers' `state`: where the state lives and whether it answers."""

    async def aclose(self) -> None: ...
