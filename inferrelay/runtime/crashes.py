"""When a crashed engine worker may start again: backoff after each crash, cooldown after a crash loop.

Per (model, engine): after the n-th crash within the window, the next start
waits `backoff_s * 2**(n-1)` seconds (capped); `limit` crashes within the
window put the pair in cooldown for `cooldown_s`. A crash in the smoke run
from an illegal instruction marks the pair unusable: the build cannot run on
this CPU, and starting it again would crash again.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from inferrelay.engines.base import utcnow


@dataclass
class Crash:
    at: float
    message: str
    when: datetime = field(default_factory=utcnow)


@dataclass
class CrashRecord:
    crashes: deque[Crash] = field(default_factory=deque)
    starts: int = 0
    unusable: str | None = None  # why, when the engine cannot run this model on this machine at all


class CrashHistory:
    def __init__(
        self,
        window_s: float = 600.0,
        limit: int = 3,
        cooldown_s: float = 600.0,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._window_s = window_s
        self._limit = limit
        self._cooldown_s = cooldown_s
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._clock = clock
        self._records: dict[tuple[str, str], CrashRecord] = {}

    def record(self, key: tuple[str, str]) -> CrashRecord:
        return self._records.setdefault(key, CrashRecord())

    def started(self, key: tuple[str, str]) -> None:
        self.record(key).starts += 1

    def crashed(self, key: tuple[str, str], message: str) -> None:
        crashes = self.record(key).crashes
        crashes.append(Crash(self._clock(), message))
        self._forget_old(crashes)

    def mark_unusable(self, key: tuple[str, str], reason: str) -> None:
        self.record(key).unusable = reason

    def recent(self, key: tuple[str, str]) -> list[Crash]:
        record = self._records.get(key)
        if record is None:
            return []
        self._forget_old(record.crashes)
        return list(record.crashes)

    def wait(self, key: tuple[str, str]) -> tuple[float, str] | None:
        """(seconds to wait, why) before the pair may start a worker again; None: it may start now."""
        record = self._records.get(key)
        if record is None:
            return None
        if record.unusable:
            return float("inf"), record.unusable
        crashes = self.recent(key)
        if not crashes:
            return None
        last = crashes[-1]
        since = self._clock() - last.at
        if len(crashes) >= self._limit:
            left = self._cooldown_s - since
            why = f"cooling down: {len(crashes)} crashes in {self._window_s:g}s, the last: {last.message}"
            return (left, why) if left > 0 else None
        backoff = min(self._max_backoff_s, self._backoff_s * 2 ** (len(crashes) - 1))
        left = backoff - since
        return (left, f"restarting after a crash ({last.message})") if left > 0 else None

    def restarts(self, key: tuple[str, str]) -> int:
        return max(0, self.record(key).starts - 1)

    def _forget_old(self, crashes: deque[Crash]) -> None:
        while crashes and self._clock() - crashes[0].at > self._window_s:
            crashes.popleft()

    def status(self, model: str) -> list[dict[str, Any]]:
        """Per engine that ever started a worker for `model`: restarts, recent crashes, and whether it may start."""
        views = []
        for (name, engine), record in self._records.items():
            if name != model:
                continue
            waiting = self.wait((name, engine))
            state = "ready" if waiting is None else waiting[1]
            views.append({
                "engine": engine,
                "restarts": max(0, record.starts - 1),
                "recent_crashes": [
                    {"at": c.when.isoformat(), "message": c.message} for c in self.recent((name, engine))
                ],
                "state": state,
                "retry_in_s": None if waiting is None or waiting[0] == float("inf") else round(waiting[0], 1),
            })  # fmt: skip
        return views
