"""The request log: one row per answered request in `$INFERRELAY_HOME/requests.sqlite3`.

A row is committed before its answer leaves (a stream's when its first event
is ready, marked `incomplete`, and completed when it ends), so a crash of the
process, SIGKILL included, never loses an answered request. The log runs in
WAL mode with synchronous=NORMAL: a commit is a write to the WAL, no fsync
(a few microseconds, on the event loop); a power cut may lose the last rows.
Checkpoints (which fsync) and the deletion of rows older than the retention
(at start and every hour) run off the event loop, on a second connection.
Text a caller chose (the model name, the request id) is kept to MAX_TEXT
characters.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from contextlib import closing, suppress
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
    key_name TEXT,                 -- the caller's key (its name, never the key); NULL without keys
    remedies TEXT                  -- JSON: [[backend, step, detail], ...] remediation taken for it; NULL: none
);
CREATE INDEX IF NOT EXISTS requests_at ON requests (at);
"""
COLUMNS = (
    "at", "request_id", "model", "kind", "stream", "backend", "status", "outcome", "attempts",
    "prompt_tokens", "completion_tokens", "latency_ms", "ttft_ms", "key_name", "remedies",
)  # fmt: skip
PRUNE_EVERY_S = 3600.0
UPKEEP_EVERY_S = 1.0
PRUNE_CHUNK = 2000  # rows per delete: the loop's writes wait for one chunk at most
MAX_TEXT = 256
INCOMPLETE = "incomplete"  # a stream's outcome until it ends


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
    remedies: list[tuple[str, str, str]] | None = None

    def values(self) -> tuple[Any, ...]:
        values = [bounded(v) if isinstance(v, str) else v for v in (getattr(self, c) for c in COLUMNS)]
        values[COLUMNS.index("attempts")] = json.dumps([[bounded(b), k] for b, k in self.attempts])
        values[COLUMNS.index("remedies")] = (
            json.dumps([[bounded(b), s, bounded(d)] for b, s, d in self.remedies]) if self.remedies else None
        )
        return tuple(values)


def bounded(text: str) -> str:
    """At most MAX_TEXT characters: a caller cannot grow the log (or a header) by sending longer names."""
    return text[:MAX_TEXT]  # no marker added: an echoed header must stay latin-1


def connect(home: Path) -> sqlite3.Connection:
    home.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(home / LOG_NAME, check_same_thread=False, timeout=30)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a crash of the process loses nothing committed
    db.executescript(SCHEMA)
    columns = {row[1] for row in db.execute("PRAGMA table_info(requests)")}
    for column in ("key_name", "remedies"):  # a log from before them
        if column not in columns:
            db.execute(f"ALTER TABLE requests ADD COLUMN {column} TEXT")
    return db


class RequestLog:
    def __init__(self, home: Path, retention_s: float) -> None:
        self._home = home
        self._db = connect(home)  # the event loop's: one autocommitted statement per row
        self._db.isolation_level = None
        self._db.execute("PRAGMA wal_autocheckpoint=0")  # a checkpoint fsyncs: the upkeep does it, off the loop
        self._retention_s = retention_s
        self._upkeep: asyncio.Task[None] | None = None
        self._pruned_at = 0.0
        self.lost = 0  # rows that could not be written (a full disk, a lock held too long)

    def start(self) -> None:
        self._upkeep = asyncio.create_task(self._upkeep_forever())

    def add(self, row: LogRow) -> int | None:
        """Commit the row now, before its answer leaves; its id, to complete it later (`replace`)."""
        marks = ", ".join("?" for _ in COLUMNS)
        return self._write(f"INSERT INTO requests ({', '.join(COLUMNS)}) VALUES ({marks})", row.values())

    def replace(self, row_id: int, row: LogRow) -> None:
        assignments = ", ".join(f"{column} = ?" for column in COLUMNS)
        self._write(f"UPDATE requests SET {assignments} WHERE id = ?", (*row.values(), row_id))

    def _write(self, statement: str, values: tuple[Any, ...]) -> int | None:
        try:
            return self._db.execute(statement, values).lastrowid
        except sqlite3.Error as exc:  # the log must never fail the request it records
            self.lost += 1
            log.warning("request log: a row could not be written (%s); %d lost so far", exc, self.lost)
            return None

    async def _upkeep_forever(self) -> None:
        while True:
            await asyncio.sleep(UPKEEP_EVERY_S)
            try:
                await asyncio.to_thread(self._tidy)
            except sqlite3.Error as exc:
                log.warning("request log: upkeep failed (%s); retrying in %ss", exc, UPKEEP_EVERY_S)

    def _tidy(self) -> None:
        """A passive checkpoint (it never blocks a writer), and the hourly prune."""
        with closing(sqlite3.connect(self._home / LOG_NAME, timeout=30, isolation_level=None)) as db:
            db.execute("PRAGMA wal_checkpoint(PASSIVE)")
            if time.time() - self._pruned_at > PRUNE_EVERY_S:
                self._prune(db)

    def prune(self) -> int:
        """Delete the rows older than the retention (at start; then hourly by the upkeep)."""
        with closing(sqlite3.connect(self._home / LOG_NAME, timeout=30, isolation_level=None)) as db:
            return self._prune(db)

    def _prune(self, db: sqlite3.Connection) -> int:
        self._pruned_at = time.time()
        cutoff, deleted = time.time() - self._retention_s, 0
        while True:
            chunk = db.execute(
                "DELETE FROM requests WHERE id IN (SELECT id FROM requests WHERE at < ? LIMIT ?)", (cutoff, PRUNE_CHUNK)
            ).rowcount
            deleted += chunk
            if chunk < PRUNE_CHUNK:
                return deleted

    async def close(self) -> None:
        """Stop the upkeep and checkpoint; every row is already committed."""
        if self._upkeep is not None:
            self._upkeep.cancel()
            with suppress(asyncio.CancelledError):
                await self._upkeep
        with suppress(sqlite3.Error):
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        self._db.close()
