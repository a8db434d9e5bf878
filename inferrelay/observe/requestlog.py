"""The request log: one row per finished request in `$INFERRELAY_HOME/requests.sqlite3`.

Rows are written off the request path: the request puts its row on a queue,
a writer task inserts what has queued within 50 ms (one transaction per
batch, in a thread), and `close` drains the queue, so a clean shutdown loses
nothing. The log runs in WAL mode with synchronous=NORMAL: a crash of the
process loses no committed row; a power cut may lose the last ones.
Rows older than the retention are deleted at start and every hour.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

LOG_NAME = "requests.sqlite3"
SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,              -- unix time the request arrived
    request_id TEXT NOT NULL,
    model TEXT NOT NULL,           -- as asked
    kind TEXT NOT NULL,            -- chat, completion, embeddings
    stream INTEGER NOT NULL,
    backend TEXT,                  -- what answered; NULL when nothing did
    status INTEGER NOT NULL,
    outcome TEXT NOT NULL,         -- success, or the error kind
    attempts TEXT NOT NULL,        -- JSON: [[backend, kind], ...] before the answer
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    latency_ms REAL NOT NULL,
    ttft_ms REAL,
    key_name TEXT                  -- the caller's key (its name, never the key); NULL without keys
);
CREATE INDEX IF NOT EXISTS requests_at ON requests (at);
"""
COLUMNS = (
    "at", "request_id", "model", "kind", "stream", "backend", "status", "outcome", "attempts",
    "prompt_tokens", "completion_tokens", "latency_ms", "ttft_ms", "key_name",
)  # fmt: skip
PRUNE_EVERY_S = 3600.0
BATCH_WINDOW_S = 0.05


@dataclass(frozen=True)
class LogRow:
    at: float
    request_id: str
    model: str
    kind: str
    stream: bool
    backend: str | None
    status: int
    outcome: str
    attempts: list[tuple[str, str]]
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    ttft_ms: float | None
    key_name: str | None = None

    def values(self) -> tuple[Any, ...]:
        values = [getattr(self, c) for c in COLUMNS]
        values[COLUMNS.index("attempts")] = json.dumps(self.attempts)
        return tuple(values)


def connect(home: Path) -> sqlite3.Connection:
    home.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(home / LOG_NAME, check_same_thread=False, timeout=30)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a crash of the process loses nothing committed
    db.executescript(SCHEMA)
    if "key_name" not in {row[1] for row in db.execute("PRAGMA table_info(requests)")}:
        db.execute("ALTER TABLE requests ADD COLUMN key_name TEXT")  # a log from before keys
    return db


class RequestLog:
    def __init__(self, home: Path, retention_s: float) -> None:
        self._db = connect(home)
        self._retention_s = retention_s
        self._queue: asyncio.Queue[LogRow | None] = asyncio.Queue()  # None: write what is queued, then stop
        self._writer: asyncio.Task[None] | None = None
        self._pruned_at = 0.0

    def start(self) -> None:
        self._writer = asyncio.create_task(self._write_forever())

    def add(self, row: LogRow) -> None:
        self._queue.put_nowait(row)

    async def _write_forever(self) -> None:
        stopping = False
        while not stopping:
            batch = [await self._queue.get()]
            if batch[0] is not None:
                await asyncio.sleep(BATCH_WINDOW_S)  # gather the rows of a busy moment into one transaction
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            rows = [row for row in batch if row is not None]
            stopping = len(rows) < len(batch)
            if rows:
                await asyncio.to_thread(self._insert, rows)

    def _insert(self, rows: list[LogRow]) -> None:
        marks = ", ".join("?" for _ in COLUMNS)
        with self._db:
            insert = f"INSERT INTO requests ({', '.join(COLUMNS)}) VALUES ({marks})"
            self._db.executemany(insert, [r.values() for r in rows])
        if time.time() - self._pruned_at > PRUNE_EVERY_S:
            self.prune()

    def prune(self) -> int:
        self._pruned_at = time.time()
        with self._db:
            deleted = self._db.execute("DELETE FROM requests WHERE at < ?", (time.time() - self._retention_s,)).rowcount
        return int(deleted)

    async def close(self) -> None:
        """Write every row still queued, then stop."""
        if self._writer is not None:
            self._queue.put_nowait(None)
            await self._writer
        self._db.close()
