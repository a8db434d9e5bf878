"""Reading the request log back: recent rows for `inferrelay logs`, aggregates for the runtime's stats."""

from __future__ import annotations

import json
import math
import sqlite3
import time
from pathlib import Path
from typing import Any

from inferrelay.observe.requestlog import LOG_NAME


def open_log(home: Path) -> sqlite3.Connection | None:
    path = home / LOG_NAME
    if not path.exists():
        return None
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    db.row_factory = sqlite3.Row
    return db


def matching(
    db: sqlite3.Connection, model: str | None, outcome: str | None, since_s: float | None, limit: int
) -> list[sqlite3.Row]:
    """Rows newest first; `outcome` is success, failed (anything else) or one error kind; None: any."""
    where: list[str] = ["1"]
    args: list[object] = []
    if model:
        where.append("model = ?")
        args.append(model)
    if outcome == "failed":
        where.append("outcome != 'success'")
    elif outcome:
        where.append("outcome = ?")
        args.append(outcome)
    if since_s is not None:
        where.append("at >= ?")
        args.append(time.time() - since_s)
    query = f"SELECT * FROM requests WHERE {' AND '.join(where)} ORDER BY at DESC, id DESC LIMIT ?"
    return list(db.execute(query, [*args, limit]))


def recent(
    db: sqlite3.Connection, model: str | None, since_s: float | None, failed: bool, limit: int
) -> list[dict[str, Any]]:
    rows = [dict(r) for r in matching(db, model, "failed" if failed else None, since_s, limit)]
    for row in rows:
        row["attempts"] = json.loads(row["attempts"])
    return rows


def aggregate(db: sqlite3.Connection) -> list[dict[str, Any]]:
    """Per model and backend: requests, errors, p50/p95 latency, tokens, over the rows kept."""
    groups: dict[tuple[str, str], list[sqlite3.Row]] = {}
    query = "SELECT model, backend, outcome, latency_ms, prompt_tokens, completion_tokens FROM requests"
    for row in db.execute(query):
        groups.setdefault((row["model"], row["backend"] or "none"), []).append(row)
    result = []
    for (model, backend), rows in sorted(groups.items()):
        latencies = sorted(r["latency_ms"] for r in rows)
        result.append(
            {
                "model": model,
                "backend": backend,
                "requests": len(rows),
                "errors": sum(r["outcome"] != "success" for r in rows),
                "p50_ms": round(_percentile(latencies, 0.50), 2),
                "p95_ms": round(_percentile(latencies, 0.95), 2),
                "prompt_tokens": sum(r["prompt_tokens"] for r in rows),
                "completion_tokens": sum(r["completion_tokens"] for r in rows),
            }
        )
    return result


def _percentile(ordered: list[float], share: float) -> float:
    """Nearest rank: the smallest value with at least `share` of the values at or below it."""
    if not ordered:
        return 0.0
    rank = max(1, math.ceil(share * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]
