"""The tunings: what `inferrelay tune` measured per model, engine and precision on this machine, in
`$INFERRELAY_HOME/tunings.sqlite3` beside the model registry, and the chain order they give.

The order (`TuningBook.order`): among the engines measured at the precision they serve in, under this machine's
fingerprint, those that keep the model's accuracy go first, fastest first; the rest of the chain follows in its
configured order. A model whose configuration names its engines keeps that order (runtime/catalog.py).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from inferrelay.tune import fingerprint

BOOK_NAME = "tunings.sqlite3"
TIE = 0.05
"""Figures within 5% of each other are a tie: `inferrelay tune`'s 3 s measurements of one engine differed by up to
9% between runs on the 2-core VM, so a smaller difference is no reason to leave the configured order."""
COMPILED = "float32+compile"  # the precision label of a torch encoder measured through torch.compile (run.py)
SCHEMA = """
CREATE TABLE IF NOT EXISTS tunings (
    model TEXT NOT NULL,
    engine TEXT NOT NULL,
    precision TEXT NOT NULL,       -- the dtype measured; `serves` marks the one the engine serves the model in
    serves INTEGER NOT NULL,
    device TEXT NOT NULL,
    fingerprint TEXT NOT NULL,     -- tune/fingerprint.py: CPU, GPU, library versions
    measured_at REAL NOT NULL,
    metric TEXT NOT NULL,          -- sentences_per_s or tokens_per_s
    value REAL,                    -- NULL when the engine failed
    first_token_ms REAL,
    load_s REAL,
    accuracy REAL,                 -- against the reference: cosine (embeddings) or greedy tokens agreeing (chat)
    keeps_accuracy INTEGER NOT NULL,
    error TEXT,
    PRIMARY KEY (model, engine, precision, device)
);
"""


@dataclass(frozen=True)
class Tuning:
    model: str
    engine: str
    precision: str
    serves: bool
    device: str
    fingerprint: str
    measured_at: float
    metric: str
    value: float | None
    first_token_ms: float | None
    load_s: float | None
    accuracy: float | None
    keeps_accuracy: bool
    error: str | None = None

    def view(self) -> dict[str, Any]:
        return {**asdict(self), "stale": self.fingerprint != fingerprint.digest()}


_COLUMNS = tuple(Tuning.__dataclass_fields__)


class TuningBook:
    def __init__(self, home: Path) -> None:
        self.path = home / BOOK_NAME
        self._lock = threading.Lock()
        self._seen: tuple[int, int] | None = None
        self._rows: list[Tuning] = []

    def record(self, tunings: list[Tuning]) -> None:
        """Replace the model's rows on this device by these."""
        if not tunings:
            return
        with self._connect() as db:
            db.execute("DELETE FROM tunings WHERE model = ? AND device = ?", (tunings[0].model, tunings[0].device))
            marks = ", ".join("?" for _ in _COLUMNS)
            db.executemany(
                f"INSERT INTO tunings ({', '.join(_COLUMNS)}) VALUES ({marks})",
                [tuple(getattr(t, c) for c in _COLUMNS) for t in tunings],
            )
        self._seen = None

    def of(self, model: str) -> list[Tuning]:
        return [t for t in self._all() if t.model == model]

    def all(self) -> list[Tuning]:
        return list(self._all())

    def order(self, model: str, chain: list[str], device: str = "cpu") -> list[str] | None:
        """The chain fastest first among engines measured here that keep the accuracy, where "faster" means by
        more than TIE: within it, the configured order stays (a short tune's figures move by that much from run to
        run). None: nothing measured under this machine's fingerprint."""
        current = fingerprint.digest()
        served = {
            t.engine: t
            for t in self.of(model)
            if t.serves and t.device == device and t.fingerprint == current and t.engine in chain
        }
        if not served:
            return None
        fast: list[Tuning] = []
        for t in (served[e] for e in chain if e in served and served[e].keeps_accuracy and served[e].value):
            place = len(fast)  # ahead of an engine configured before it only when faster by more than the noise
            while place and (t.value or 0.0) > (fast[place - 1].value or 0.0) * (1 + TIE):
                place -= 1
            fast.insert(place, t)
        first = [t.engine for t in fast]
        return first + [engine for engine in chain if engine not in first]

    def compiled_pays(self, model: str, chain: list[str], rows: int, device: str = "cpu") -> bool:
        """Whether torch through torch.compile, measured here, computes `rows` sooner than every engine of the chain
        as it serves, each with its measured load (the compile is in the compiled row's) and the model's accuracy:
        then a batch job of that many rows runs it (batch/model.py)."""
        current = [
            t
            for t in self.of(model)
            if t.device == device and t.fingerprint == fingerprint.digest() and t.engine in chain and t.keeps_accuracy
        ]
        compiled = [_seconds(t, rows) for t in current if t.precision == COMPILED and t.value]
        served = [_seconds(t, rows) for t in current if t.serves and t.value]
        return bool(compiled) and compiled[0] < min(served, default=float("inf"))

    def _all(self) -> list[Tuning]:
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return []
        seen = (stat.st_mtime_ns, stat.st_size)
        if seen != self._seen:
            with self._lock, self._connect() as db:
                rows = db.execute(f"SELECT {', '.join(_COLUMNS)} FROM tunings ORDER BY model, engine").fetchall()
            self._rows = [_tuning(row) for row in rows]
            self._seen = seen
        return self._rows

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=30)
        try:
            db.executescript(SCHEMA)  # the default rollback journal: a write changes the file's mtime
            with db:
                yield db
        finally:
            db.close()


def _seconds(tuning: Tuning, rows: int) -> float:
    """The time to load the model and embed `rows` at the measured rate."""
    return (tuning.load_s or 0.0) + rows / (tuning.value or 1.0)


def _tuning(row: tuple[Any, ...]) -> Tuning:
    values = dict(zip(_COLUMNS, row, strict=True))
    values["serves"], values["keeps_accuracy"] = bool(values["serves"]), bool(values["keeps_accuracy"])
    return Tuning(**values)


def as_json(tunings: list[Tuning]) -> str:
    return json.dumps([t.view() for t in tunings], indent=2)
