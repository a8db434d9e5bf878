"""The console's reads of the request log: filters, one request, and the per-bucket series with exact figures."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from inferrelay.console import data
from inferrelay.observe.queries import open_log
from inferrelay.observe.requestlog import COLUMNS, connect

NOW = 1_000_000.0


def add(
    db: sqlite3.Connection,
    at: float,
    request_id: str,
    model: str,
    outcome: str,
    latency: float,
    attempts: list[list[str]],
    ttft: float | None = None,
) -> None:
    row = (at, request_id, model, "chat", 0, "local", 200 if outcome == "success" else 503, outcome,
           json.dumps(attempts), 3, 4, latency, ttft, None, None)  # fmt: skip
    db.execute(f"INSERT INTO requests ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})", row)


@pytest.fixture
def log(tmp_path: Path) -> sqlite3.Connection:
    writer = connect(tmp_path)
    add(writer, NOW - 55, "a", "smol", "success", 100, [])
    add(writer, NOW - 52, "b", "smol", "success", 300, [["dead", "transient"]], ttft=40)
    add(writer, NOW - 51, "c", "mini", "overloaded", 10, [["local", "overloaded"], ["dead", "transient"]])
    add(writer, NOW - 5, "d", "smol", "success", 200, [])
    add(writer, NOW - 900, "old", "smol", "success", 1, [])
    writer.commit()
    writer.close()
    reader = open_log(tmp_path)
    assert reader is not None
    return reader


def test_rows_filter_by_model_and_outcome_newest_first(log: sqlite3.Connection) -> None:
    assert [r["request_id"] for r in data.rows(log, "smol", None, None, 10)] == ["d", "b", "a", "old"]
    assert [r["request_id"] for r in data.rows(log, None, "failed", None, 10)] == ["c"]
    assert [r["request_id"] for r in data.rows(log, None, "success", None, 2)] == ["d", "b"]
    found = data.one(log, "c")
    assert found is not None
    assert found["attempts"] == [{"backend": "local", "kind": "overloaded"}, {"backend": "dead", "kind": "transient"}]
    assert data.one(log, "nope") is None


def test_series_buckets_count_rate_errors_and_percentiles(log: sqlite3.Connection) -> None:
    series = data.series(log, minutes=1, bucket_s=10, now=NOW)
    points = series["points"]
    assert len(points) == 6
    first, last = points[0], points[-1]  # [NOW-60, NOW-50) holds a, b, c; [NOW-10, NOW) holds d
    assert first["rps"] == 0.3
    assert first["error_rate"] == 0.333
    assert (first["p50_ms"], first["p95_ms"], first["ttft_p50_ms"]) == (100, 300, 40)
    assert (last["rps"], last["p50_ms"]) == (0.1, 200)
    assert [p["rps"] for p in points[1:5]] == [0, 0, 0, 0]
    assert series["fallbacks"] == {"transient": 2, "overloaded": 1}


def test_one_request_opens_to_its_remediation_steps(tmp_path: Path) -> None:
    from inferrelay.observe.requestlog import LogRow

    writer = connect(tmp_path)
    row = LogRow(NOW, "r", "mini", "embeddings", False, "local/onnx", 200, "success", [], 3, 0, 12.0, None, None,
                 [("local/torch", "lower_precision", "float32 -> bfloat16")])  # fmt: skip
    writer.execute(f"INSERT INTO requests ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                   row.values())  # fmt: skip
    writer.commit()
    with open_log(tmp_path) as db:
        found = data.one(db, "r")
    assert found is not None
    assert found["remedies"] == [{"backend": "local/torch", "step": "lower_precision", "detail": "float32 -> bfloat16"}]
