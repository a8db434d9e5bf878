"""The persistent model registry: SQLite under $INFERRELAY_HOME, its schema upgraded by numbered migrations.

One connection, guarded by a lock (the loop and worker threads both use it),
in WAL mode; every change is one transaction, so a crash never leaves half a
registration.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from inferrelay.config.schema import ModelSpec
from inferrelay.engines.base import utcnow
from inferrelay.errors import ErrorKind, InferrelayError

log = logging.getLogger(__name__)

Migration = Callable[[sqlite3.Connection], None]


def _create_models(db: sqlite3.Connection) -> None:
    db.execute(
        """CREATE TABLE models (
            name TEXT PRIMARY KEY,
            source TEXT NOT NULL,
            capabilities TEXT NOT NULL,
            engines TEXT NOT NULL,
            context_length INTEGER NOT NULL,
            device TEXT NOT NULL,
            dtype TEXT NOT NULL,
            keep_alive REAL,
            pinned INTEGER NOT NULL DEFAULT 0,
            engine_options TEXT NOT NULL DEFAULT '{}',
            builtin INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )"""
    )


MIGRATIONS: list[Migration] = [_create_models]
"""Migration N (1-based) takes a database at version N-1 to version N. Append; never edit a shipped one."""

COLUMNS = ("source", "capabilities", "engines", "context_length", "device", "dtype", "keep_alive", "pinned")
JSON_COLUMNS = ("capabilities", "engines", "engine_options")


@dataclass(frozen=True)
class Registration:
    spec: ModelSpec
    builtin: bool
    created_at: datetime
    updated_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.spec.model_dump(mode="json"),
            "builtin": self.builtin,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


class ModelRegistry:
    def __init__(self, home: Path, migrations: list[Migration] = MIGRATIONS) -> None:
        home.mkdir(parents=True, exist_ok=True)
        self.path = home / "registry.sqlite3"
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._migrate(migrations)

    def _migrate(self, migrations: list[Migration]) -> None:
        with self._transaction() as db:
            version = int(db.execute("PRAGMA user_version").fetchone()[0])
            if version > len(migrations):
                raise InferrelayError(
                    ErrorKind.INTERNAL,
                    f"{self.path} has schema version {version}, newer than this inferrelay knows "
                    f"({len(migrations)}): upgrade inferrelay, or point INFERRELAY_HOME elsewhere",
                )
            for number, migration in enumerate(migrations[version:], start=version + 1):
                migration(db)
                db.execute(f"PRAGMA user_version = {number}")

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def seed(self, specs: list[ModelSpec]) -> None:
        """The embedded models, written once; a row already there (perhaps changed by a user) stays."""
        with self._transaction() as db:
            for spec in specs:
                if db.execute("SELECT 1 FROM models WHERE name = ?", (spec.name,)).fetchone() is None:
                    self._insert(db, spec, builtin=True)

    def add(self, spec: ModelSpec) -> Registration:
        with self._transaction() as db:
            row = db.execute("SELECT created_at FROM models WHERE name = ?", (spec.name,)).fetchone()
            if row is not None:
                raise InferrelayError(
                    ErrorKind.CONFLICT,
                    f"a model named {spec.name!r} is already registered (at {row['created_at']}); choose another name",
                    param="name",
                )
            self._insert(db, spec, builtin=False)
        registration = self.get(spec.name)
        assert registration is not None
        return registration

    def _insert(self, db: sqlite3.Connection, spec: ModelSpec, builtin: bool) -> None:
        now = utcnow().isoformat()
        values = _row_values(spec)
        names = ", ".join(["name", *values, "builtin", "created_at", "updated_at"])
        marks = ", ".join("?" * (len(values) + 4))
        db.execute(f"INSERT INTO models ({names}) VALUES ({marks})", (spec.name, *values.values(), builtin, now, now))

    def update(self, name: str, **changes: Any) -> Registration:
        current = self.get(name)
        if current is None:
            raise InferrelayError(ErrorKind.MODEL_NOT_FOUND, f"no registered model named {name!r}")
        try:
            spec = ModelSpec.model_validate({**current.spec.model_dump(), **changes})
        except ValidationError as exc:
            raise InferrelayError(
                ErrorKind.BAD_REQUEST, f"invalid change to {name!r}: {exc.errors()[0]['msg']}"
            ) from exc
        values = _row_values(spec)
        assignments = ", ".join(f"{column} = ?" for column in values)
        with self._transaction() as db:
            db.execute(
                f"UPDATE models SET {assignments}, updated_at = ? WHERE name = ?",
                (*values.values(), utcnow().isoformat(), name),
            )
        updated = self.get(name)
        assert updated is not None
        return updated

    def remove(self, name: str) -> None:
        current = self.get(name)
        if current is None:
            raise InferrelayError(ErrorKind.MODEL_NOT_FOUND, f"no registered model named {name!r}")
        if current.builtin:
            raise InferrelayError(ErrorKind.BAD_REQUEST, f"{name!r} is an embedded model and cannot be removed")
        with self._transaction() as db:
            db.execute("DELETE FROM models WHERE name = ?", (name,))

    def get(self, name: str) -> Registration | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM models WHERE name = ?", (name,)).fetchone()
        return _registration(row) if row is not None else None

    def list(self) -> list[Registration]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM models ORDER BY builtin DESC, name").fetchall()
        return [r for r in (_registration(row) for row in rows) if r is not None]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _row_values(spec: ModelSpec) -> dict[str, Any]:
    data = spec.model_dump(mode="json")
    values = {column: data[column] for column in (*COLUMNS, "engine_options")}
    for column in JSON_COLUMNS:
        values[column] = json.dumps(values[column])
    return values


def _registration(row: sqlite3.Row) -> Registration | None:
    """A row as a registration; one that no longer validates (edited by hand) is skipped with a warning."""
    fields = {column: row[column] for column in (*COLUMNS, "engine_options")}
    try:
        for column in JSON_COLUMNS:
            fields[column] = json.loads(fields[column])
        spec = ModelSpec.model_validate({**fields, "name": row["name"], "pinned": bool(row["pinned"])})
    except (ValidationError, ValueError) as exc:
        log.warning("registry: skipping model %r, its row does not validate: %s", row["name"], exc)
        return None
    return Registration(
        spec, bool(row["builtin"]), datetime.fromisoformat(row["created_at"]), datetime.fromisoformat(row["updated_at"])
    )
