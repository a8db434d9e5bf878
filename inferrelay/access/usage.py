"""Usage per key and model, read from the request log (`$INFERRELAY_HOME/requests.sqlite3`, column key_name)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

LOG_NAME = "requests.sqlite3"


def spent_by_key(home: Path) -> dict[str, int]:
    """Every token each key's answers reported, over what the log keeps (its retention)."""
    rows = _query(home, "SELECT key_name, SUM(prompt_tokens + completion_tokens) FROM requests "
                        "WHERE key_name IS NOT NULL GROUP BY key_name", ())  # fmt: skip
    return {str(name): int(total or 0) for name, total in rows}


def usage(home: Path, name: str | None = None, since_s: float | None = None) -> list[dict[str, Any]]:
    """Requests and tokens per key and model, newest first by key name; only `name`'s when given."""
    where: list[str] = ["key_name IS NOT NULL"]
    args: list[Any] = []
    if name is not None:
        where.append("key_name = ?")
        args.append(name)
    if since_s is not None:
        where.append("at >= ?")
        args.append(time.time() - since_s)
    rows = _query(
        home,
        "SELECT key_name, model, COUNT(*), SUM(prompt_tokens), SUM(completion_tokens), "
        "SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END) FROM requests "
        f"WHERE {' AND '.join(where)} GROUP BY key_name, model ORDER BY key_name, model",
        tuple(args),
    )
    return [
        {
            "key": key, "model": model, "requests": int(count), "failed": int(failed or 0),
            "prompt_tokens": int(prompt or 0), "completion_tokens": int(completion or 0),
            "total_tokens": int(prompt or 0) + int(completion or 0),
        }
        for key, model, count, prompt, completion, failed in rows
    ]  # fmt: skip


def _query(home: Path, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    path = home / LOG_NAME
    if not path.exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        return db.execute(sql, args).fetchall()
    except sqlite3.OperationalError as exc:  # a log written before keys existed has no key_name column
        if "key_name" in str(exc):
            return []
        raise
    finally:
        db.close()
