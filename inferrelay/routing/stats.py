"""What is known of each remote deployment: in flight, latency, health, last error."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from inferrelay.engines.base import utcnow

LATENCY_WEIGHT = 0.3
"""Weight of the newest sample in the latency average (exponentially weighted)."""


@dataclass
class DeploymentStats:
    in_flight: int = 0
    elsewhere: int = 0  # in flight at the other servers sharing the state, as of the last exchange
    requests: int = 0
    failures: int = 0
    latency_ms: float | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None
    healthy: bool = True
    health_checked_at: datetime | None = None

    def started(self) -> float:
        self.in_flight += 1
        self.requests += 1
        return time.perf_counter()

    def finished(self, started: float, error: str | None = None) -> None:
        self.answered(started, error)
        self.released()

    def answered(self, started: float, error: str | None = None) -> None:
        """The answer, or its first event for a stream, arrived (or the request failed)."""
        if error is not None:
            self.failures += 1
            self.last_error, self.last_error_at = error, utcnow()
            return
        sample = (time.perf_counter() - started) * 1000
        self.latency_ms = (
            sample if self.latency_ms is None else (LATENCY_WEIGHT * sample + (1 - LATENCY_WEIGHT) * self.latency_ms)
        )

    def released(self) -> None:
        """The request is over: a stream's last event is sent, or the stream is closed."""
        self.in_flight -= 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "healthy": self.healthy,
            "health_checked_at": self.health_checked_at.isoformat() if self.health_checked_at else None,
            "in_flight": self.in_flight,
            "in_flight_elsewhere": self.elsewhere,
            "requests": self.requests,
            "failures": self.failures,
            "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 2),
            "last_error": self.last_error,
            "last_error_at": self.last_error_at.isoformat() if self.last_error_at else None,
        }


@dataclass
class DeploymentBook:
    """Stats by provider name, created on first use."""

    stats: dict[str, DeploymentStats] = field(default_factory=dict)

    def __getitem__(self, provider: str) -> DeploymentStats:
        return self.stats.setdefault(provider, DeploymentStats())
