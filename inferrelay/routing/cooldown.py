"""Circuit breaking per deployment: repeated or unhealable failures open it for a while.

A new failure can only extend an open cooldown, never shorten it. When the
cooldown ends, one request is let through as a probe: its success closes the
circuit, its failure opens it again for a full period.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from inferrelay.errors import ErrorKind

UNHEALABLE = frozenset({ErrorKind.UPSTREAM_ERROR, ErrorKind.DEPENDENCY_MISSING, ErrorKind.ENGINE_UNAVAILABLE})
"""Kinds that retrying will not fix (a 401, a dead engine): they open the circuit at once."""


@dataclass
class Circuit:
    failures: int = 0
    open_until: float = 0.0
    last_failure_at: float = 0.0
    probing: bool = False


class CooldownTracker:
    def __init__(self, allowed_fails: int = 3, clock: Callable[[], float] = time.monotonic) -> None:
        self._allowed_fails = allowed_fails
        self._clock = clock
        self._circuits: dict[str, Circuit] = {}

    def admit(self, key: str) -> bool:
        """Whether a request may go to `key` now; after a cooldown, only one probe at a time."""
        circuit = self._circuits.get(key)
        if circuit is None or circuit.open_until == 0.0:
            return True
        if self._clock() < circuit.open_until or circuit.probing:
            return False
        circuit.probing = True
        return True

    def refuses(self, key: str) -> bool:
        """Whether `admit` would refuse `key` now, asked without spending the probe."""
        circuit = self._circuits.get(key)
        return (
            circuit is not None
            and circuit.open_until != 0.0
            and (self._clock() < circuit.open_until or circuit.probing)
        )

    def failed(self, key: str, kind: ErrorKind, cooldown_s: float) -> None:
        now = self._clock()
        circuit = self._circuits.setdefault(key, Circuit())
        circuit.failures += 1
        circuit.last_failure_at = now
        if circuit.probing or kind in UNHEALABLE or circuit.failures >= self._allowed_fails:
            circuit.open_until = max(circuit.open_until, now + cooldown_s)
            circuit.probing = False

    def succeeded(self, key: str) -> None:
        self._circuits.pop(key, None)

    def cooling(self, key: str) -> bool:
        circuit = self._circuits.get(key)
        return circuit is not None and circuit.open_until > self._clock()

    def last_failure_at(self, key: str) -> float:
        circuit = self._circuits.get(key)
        return circuit.last_failure_at if circuit else 0.0

    def status(self, key: str) -> dict[str, object]:
        circuit = self._circuits.get(key, Circuit())
        remaining = max(0.0, circuit.open_until - self._clock())
        state = "open" if remaining > 0 else ("half_open" if circuit.open_until else "closed")
        return {"state": state, "consecutive_failures": circuit.failures, "cooldown_remaining_s": round(remaining, 3)}
