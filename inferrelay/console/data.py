"""Read-only views the console needs and the JSON APIs lacked: request log rows, a time series, a batch job."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from inferrelay.batch.manifest import Manifest
from inferrelay.observe.queries import _percentile, matching

MAX_ROWS = 500


def rows(
    db: sqlite3.Connection, model: str | None, outcome: str | None, since_s: float | None, limit: int
) -> list[dict[str, Any]]:
    """Newest first; `outcome` is success, failed (anything else) or one error kind."""
    return [_row(r) for r in matching(db, model, outcome, since_s, min(limit, MAX_ROWS))]


def one(db: sqlite3.Connection, request_id: str) -> dict[str, Any] | None:
    found = db.execute("SELECT * FROM requests WHERE request_id = ? ORDER BY id DESC LIMIT 1", [request_id]).fetchone()
    return None if found is None else _row(found)


def _row(row: sqlite3.Row) -> dict[str, Any]:
    result = dict(row)
    result["attempts"] = [{"backend": b, "kind": k} for b, k in json.loads(result["attempts"])]
    remedies = json.loads(result.get("remedies") or "[]")
    result["remedies"] = [{"backend": b, "step": step, "detail": d} for b, step, d in remedies]
    return result


def series(db: sqlite3.Connection, minutes: float, bucket_s: float, now: float | None = None) -> dict[str, Any]:
    """Per bucket of the last `minutes`: requests/s, error rate, p50/p95 latency and time to first token; and the
    failed attempts before an answer (fallbacks) by error kind."""
    now = time.time() if now is None else now
    start = now - minutes * 60
    count = max(1, int(minutes * 60 / bucket_s))
    buckets: list[list[sqlite3.Row]] = [[] for _ in range(count)]
    fallbacks: dict[str, int] = {}
    query = "SELECT at, outcome, latency_ms, ttft_ms, attempts FROM requests WHERE at >= ? ORDER BY at"
    for row in db.execute(query, [start]):
        buckets[min(count - 1, int((row["at"] - start) / bucket_s))].append(row)
        for _, kind in json.loads(row["attempts"]):
            fallbacks[kind] = fallbacks.get(kind, 0) + 1
    points = []
    for index, bucket in enumerate(buckets):
        latencies = sorted(r["latency_ms"] for r in bucket)
        firsts = sorted(r["ttft_ms"] for r in bucket if r["ttft_ms"] is not None)
        points.append(
            {
                "at": start + (index + 1) * bucket_s,
                "rps": round(len(bucket) / bucket_s, 3),
                "error_rate": round(sum(r["outcome"] != "success" for r in bucket) / len(bucket), 3) if bucket else 0,
                "p50_ms": round(_percentile(latencies, 0.5), 1),
                "p95_ms": round(_percentile(latencies, 0.95), 1),
                "ttft_p50_ms": round(_percentile(firsts, 0.5), 1),
            }
        )
    return {"bucket_s": bucket_s, "points": points, "fallbacks": fallbacks}


def batch_status(outdir: Path) -> dict[str, Any] | None:
    """`inferrelay batch status OUTDIR` as JSON; None when the folder holds no job."""
    manifest = Manifest.load(outdir)
    if manifest is None:
        return None
    shards = [
        {k: getattr(s, k) for k in ("index", "start", "stop", "state", "rows_done", "attempts", "last_error")}
        for s in manifest.shards
    ]
    return {
        "output": str(outdir),
        "input": manifest.input_path,
        "parameters": manifest.parameters,
        "total_rows": manifest.total_rows,
        "rows_done": sum(s["rows_done"] for s in shards),
        "failed": sum(s["state"] == "failed" for s in shards),
        "shards": shards,
        "at": time.time(),
    }
