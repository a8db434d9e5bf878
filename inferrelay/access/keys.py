"""API keys: who may call, which models, how much. Only a hash of each key is stored, in
`$INFERRELAY_HOME/keys.sqlite3`.

A key is `irk_` and 43 URL-safe characters (256 random bits), printed once when it is made. The store keeps its
SHA-256 (a key is random, so a plain hash cannot be reversed by guessing) and its first characters for people to
recognise it. The server reads every key into memory and looks up the hash of the key a request carries; it
rereads the file whenever the file changed (`inferrelay keys revoke` in another process takes effect on the next
request). docs/keys.md has the whole model.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

KEYS_NAME = "keys.sqlite3"
PREFIX = "irk_"
MAX_LIMIT = 2**63 - 1
"""rpm, tpm and budget_tokens are SQLite INTEGERs: a larger one is a 400, not an OverflowError."""
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (
    name TEXT PRIMARY KEY,
    hash TEXT NOT NULL UNIQUE,     -- SHA-256 of the key, hex
    shown TEXT NOT NULL,           -- the key's first characters, for people
    models TEXT,                   -- JSON list of model names; NULL: every model
    rpm INTEGER,
    tpm INTEGER,
    budget_tokens INTEGER,
    expires_at REAL,               -- unix time; NULL: never
    admin INTEGER NOT NULL,
    created_at REAL NOT NULL,
    revoked_at REAL,
    request_timeout REAL           -- seconds; caps each request's time budget; NULL: the model's or runtime's
);
"""


@dataclass(frozen=True)
class Key:
    name: str
    hash: str
    shown: str
    models: tuple[str, ...] | None = None
    rpm: int | None = None
    tpm: int | None = None
    budget_tokens: int | None = None
    expires_at: float | None = None
    admin: bool = False
    created_at: float = 0.0
    revoked_at: float | None = None
    request_timeout: float | None = None

    def may_use(self, model: str) -> bool:
        return self.models is None or model in self.models

    def state(self, now: float | None = None) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and (time.time() if now is None else now) >= self.expires_at:
            return "expired"
        return "active"

    def public(self) -> dict[str, object]:
        """Everything but the hash: what `keys list` and the admin API show."""
        return {
            "name": self.name, "key": f"{self.shown}...", "admin": self.admin,
            "models": list(self.models) if self.models is not None else None, "rpm": self.rpm, "tpm": self.tpm,
            "budget_tokens": self.budget_tokens, "expires_at": self.expires_at, "created_at": self.created_at,
            "revoked_at": self.revoked_at, "request_timeout": self.request_timeout, "state": self.state(),
        }  # fmt: skip


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


class KeyStore:
    def __init__(self, home: Path) -> None:
        self.path = home / KEYS_NAME
        self._lock = threading.Lock()
        self._seen: tuple[int, int] | None = None  # (mtime_ns, size) of the file when last read
        self._by_hash: dict[str, Key] = {}

    # Reading: what the server does per request.

    def has_keys(self) -> bool:
        self._refresh()
        return bool(self._by_hash)

    def find(self, secret: str) -> Key | None:
        """The key whose hash is the hash of `secret`, whatever its state; None if none."""
        self._refresh()
        wanted = digest(secret)
        key = self._by_hash.get(wanted)
        if key is None or not hmac.compare_digest(key.hash, wanted):
            return None
        return key

    def all(self) -> list[Key]:
        self._refresh()
        return sorted(self._by_hash.values(), key=lambda k: k.name)

    def named(self, name: str) -> Key | None:
        return next((k for k in self.all() if k.name == name), None)

    def _refresh(self) -> None:
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            self._seen, self._by_hash = None, {}
            return
        seen = (stat.st_mtime_ns, stat.st_size)
        if seen == self._seen:
            return
        with self._lock, self._connect() as db:
            rows = db.execute(f"SELECT {', '.join(_COLUMNS)} FROM keys").fetchall()
            self._by_hash = {row[1]: _key(row) for row in rows}
            self._seen = seen

    # Writing: the CLI and the admin API.

    def create(
        self,
        name: str,
        *,
        models: list[str] | None = None,
        rpm: int | None = None,
        tpm: int | None = None,
        budget_tokens: int | None = None,
        expires_at: float | None = None,
        admin: bool = False,
        request_timeout: float | None = None,
    ) -> tuple[Key, str]:
        """A new key and its secret, which is shown this once and never stored."""
        if not NAME.match(name):
            raise ValueError("a key name is 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
        for field, value in (("rpm", rpm), ("tpm", tpm), ("budget_tokens", budget_tokens)):
            if value is not None and not 1 <= value <= MAX_LIMIT:
                raise ValueError(f"{field} must be from 1 to {MAX_LIMIT}")
        if request_timeout is not None and not 0 < request_timeout <= 366 * 86400:
            raise ValueError("request_timeout is more than 0 seconds and at most 366 days")
        if models is not None and not models:
            raise ValueError("models: name at least one model, or leave it out for every model")
        secret = PREFIX + secrets.token_urlsafe(32)
        key = Key(
            name, digest(secret), secret[:8], tuple(models) if models is not None else None, rpm, tpm,
            budget_tokens, expires_at, admin, time.time(), None, request_timeout,
        )  # fmt: skip
        with self._lock, self._connect() as db:
            if db.execute("SELECT 1 FROM keys WHERE name = ?", (name,)).fetchone():
                raise KeyExistsError(f"a key named {name!r} exists; revoke it or choose another name")
            marks = ", ".join("?" for _ in _COLUMNS)
            db.execute(f"INSERT INTO keys ({', '.join(_COLUMNS)}) VALUES ({marks})", _row(key))
        self._seen = None
        return key, secret

    def revoke(self, name: str) -> Key:
        with self._lock, self._connect() as db:
            done = db.execute(
                "UPDATE keys SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL", (time.time(), name)
            ).rowcount
            if not done and not db.execute("SELECT 1 FROM keys WHERE name = ?", (name,)).fetchone():
                raise KeyError(name)
        self._seen = None
        key = self.named(name)
        assert key is not None
        return key

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """One transaction, committed (or rolled back) and closed."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not self.path.exists()
        db = sqlite3.connect(self.path, timeout=30)
        try:
            if fresh:
                os.chmod(self.path, 0o600)  # hashes only, but nobody else's business
            db.executescript(SCHEMA)  # the default rollback journal: every commit changes the file's mtime
            if "request_timeout" not in {row[1] for row in db.execute("PRAGMA table_info(keys)")}:
                db.execute("ALTER TABLE keys ADD COLUMN request_timeout REAL")  # a store from before it
            with db:
                yield db
        finally:
            db.close()


class KeyExistsError(ValueError):
    pass


_COLUMNS = (
    "name", "hash", "shown", "models", "rpm", "tpm", "budget_tokens", "expires_at", "admin", "created_at",
    "revoked_at", "request_timeout",
)  # fmt: skip


def _row(key: Key) -> tuple[object, ...]:
    models = json.dumps(list(key.models)) if key.models is not None else None
    return (
        key.name, key.hash, key.shown, models, key.rpm, key.tpm, key.budget_tokens, key.expires_at,
        int(key.admin), key.created_at, key.revoked_at, key.request_timeout,
    )  # fmt: skip


def _key(row: tuple[object, ...]) -> Key:
    name, hash_, shown, models, rpm, tpm, budget, expires, admin, created, revoked, timeout = row
    return Key(
        str(name), str(hash_), str(shown), tuple(json.loads(str(models))) if models is not None else None,
        _int(rpm), _int(tpm), _int(budget), _float(expires), bool(admin), float(str(created)), _float(revoked),
        _float(timeout),
    )  # fmt: skip


def _int(value: object) -> int | None:
    return None if value is None else int(str(value))


def _float(value: object) -> float | None:
    return None if value is None else float(str(value))
