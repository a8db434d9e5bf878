"""What a caller sends cannot grow the metrics or the request log, and a row is committed before its answer leaves."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from inferrelay.errors import ErrorKind, InferrelayError
from inferrelay.observe.metrics import UNKNOWN, Metrics, backend_label
from inferrelay.observe.requestlog import INCOMPLETE, LOG_NAME, MAX_TEXT, RequestLog
from inferrelay.observe.requests import Observer
from inferrelay.outcome import Attempt, Served

KNOWN = {"smollm2-135m-instruct", "gpt-routed"}


def observer(home: Path) -> Observer:
    watching = Observer(Metrics(), RequestLog(home, retention_s=86400))
    watching.known_model = KNOWN.__contains__
    return watching


def rows(home: Path) -> list[sqlite3.Row]:
    """Read by another connection, as after a crash: only what is committed."""
    with sqlite3.connect(home / LOG_NAME) as db:
        db.row_factory = sqlite3.Row
        return list(db.execute("SELECT * FROM requests ORDER BY id"))


def sample(watching: Observer, name: str, model: str) -> float | None:
    metrics = watching.metrics
    assert metrics is not None
    return metrics.registry.get_sample_value(
        name, {"model_name": model, "backend": "none", "outcome": "model_not_found"}
    )


def test_unknown_model_names_share_one_label(tmp_path: Path) -> None:
    watching = observer(tmp_path)
    for number in range(50):
        tracked = watching.begin(f"no-such-model-{number}-" + "x" * 1000, "chat", False)
        watching.failed(tracked, InferrelayError(ErrorKind.MODEL_NOT_FOUND, "no such model"))
        watching.finish(tracked)
    assert sample(watching, "inferrelay:requests_total", UNKNOWN) == 50
    metrics = watching.metrics
    assert metrics is not None
    exposition = metrics.exposition().decode()
    assert "no-such-model" not in exposition
    assert len(exposition) < 20_000


def test_a_known_model_keeps_its_label(tmp_path: Path) -> None:
    watching = observer(tmp_path)
    tracked = watching.begin("smollm2-135m-instruct", "chat", False)
    watching.failed(tracked, InferrelayError(ErrorKind.MODEL_NOT_FOUND, "gone"))
    watching.finish(tracked)
    assert sample(watching, "inferrelay:requests_total", "smollm2-135m-instruct") == 1
    assert sample(watching, "inferrelay:requests_total", UNKNOWN) is None


def test_a_backend_named_after_an_unknown_model_is_labelled_unknown(tmp_path: Path) -> None:
    sent = "gpt-" + "y" * 500  # a pattern route passes the caller's name on: `provider/<name>`
    assert backend_label(f"up/{sent}", sent, UNKNOWN) == "up/unknown"
    assert backend_label("up/gpt-routed", "gpt-routed", "gpt-routed") == "up/gpt-routed"
    assert backend_label("local", sent, UNKNOWN) == "local"
    watching = observer(tmp_path)
    tracked = watching.begin(sent, "chat", False)
    failure = InferrelayError(ErrorKind.TRANSIENT, "reset")
    watching.served(tracked, Served({}, f"other/{sent}", [Attempt.of(f"up/{sent}", failure)]))
    watching.finish(tracked)
    metrics = watching.metrics
    assert metrics is not None
    exposition = metrics.exposition().decode()
    assert "y" * 50 not in exposition
    assert 'from_backend="up/unknown"' in exposition
    assert 'to_backend="other/unknown"' in exposition


def test_caller_text_in_the_log_is_bounded(tmp_path: Path) -> None:
    watching = observer(tmp_path)
    tracked = watching.begin("m" * 5000, "chat", False, request_id="r" * 5000)
    assert tracked.request_id == "r" * MAX_TEXT  # what is echoed back in x-request-id, and sent to providers
    watching.failed(tracked, InferrelayError(ErrorKind.MODEL_NOT_FOUND, "no such model"))
    watching.finish(tracked)
    (row,) = rows(tmp_path)
    assert (row["model"], row["request_id"]) == ("m" * MAX_TEXT, "r" * MAX_TEXT)


def test_a_row_is_committed_when_finish_returns(tmp_path: Path) -> None:
    """Nothing waits for a batch: once the route has its answer, its row is on disk for any reader."""
    watching = observer(tmp_path)
    for number in range(3):
        tracked = watching.begin("smollm2-135m-instruct", "chat", False, request_id=f"id-{number}")
        watching.served(tracked, Served({}, "local/llamacpp"))
        watching.finish(tracked)
        assert [r["request_id"] for r in rows(tmp_path)] == [f"id-{n}" for n in range(number + 1)]


def test_a_stream_has_its_row_from_its_first_event_and_completed_at_its_end(tmp_path: Path) -> None:
    watching = observer(tmp_path)
    tracked = watching.begin("smollm2-135m-instruct", "chat", True, request_id="streamed")
    watching.served(tracked, Served({}, "local/llamacpp"))
    (row,) = rows(tmp_path)
    assert (row["request_id"], row["outcome"], row["status"], row["backend"]) == (
        "streamed",
        INCOMPLETE,
        200,
        "local/llamacpp",
    )
    watching.usage(tracked, {"prompt_tokens": 7, "completion_tokens": 5})
    watching.finish(tracked)
    (row,) = rows(tmp_path)
    assert (row["outcome"], row["completion_tokens"]) == ("success", 5)


def test_prune_and_close_keep_recent_rows(tmp_path: Path) -> None:
    log = RequestLog(tmp_path, retention_s=3600)
    watching = Observer(None, log)
    for number in range(5):
        tracked = watching.begin("m", "chat", False, request_id=f"id-{number}")
        tracked.at -= 7200 if number < 3 else 0  # three arrived two hours ago
        watching.finish(tracked)
    assert log.prune() == 3
    asyncio.run(log.close())
    assert [r["request_id"] for r in rows(tmp_path)] == ["id-3", "id-4"]
