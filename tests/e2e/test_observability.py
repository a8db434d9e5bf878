"""Metrics, the request log and its stats, for real: counters move by exactly what was sent."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from inferrelay.config.embedded import MINILM, SMOLLM2
from tests.conftest import FRANCE
from tests.unit.test_error_rules import closed_port

pytestmark = pytest.mark.slow

SMOL = SMOLLM2.name


def config(tmp_path: Path) -> Path:
    folder = tmp_path / "config"
    folder.mkdir()
    (folder / "providers.yaml").write_text(
        "providers:\n  dead:\n    type: openai_compatible\n"
        f"    base_url: http://127.0.0.1:{closed_port()}/v1\n"
        "    max_retries: 0\n    health_interval_s: 0\n    timeouts: {connect_s: 1, read_s: 10}\n"
    )
    (folder / "model-mappings.yaml").write_text(
        "exact_matches:\n  dead-then-local: {chain: dead-first}\n"
        "fallback_chains:\n  dead-first:\n"
        f"    - {{provider: dead, model: {SMOL}}}\n    - {{provider: local, model: {SMOL}}}\n"
    )
    return folder


def scrape(server: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"{server.url}/metrics", timeout=30).text
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_and_the_request_log_count_exactly_what_was_sent(start_server: Any, tmp_path: Path) -> None:
    home = tmp_path / "home"
    server = start_server(home, "--config", str(config(tmp_path)))
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    usage = {"prompt": 0, "completion": 0}
    for _ in range(2):
        answer = client.chat.completions.create(model=SMOL, messages=FRANCE, max_tokens=8, temperature=0)
        assert answer.usage is not None
        usage["prompt"] += answer.usage.prompt_tokens
        usage["completion"] += answer.usage.completion_tokens
    chunks = list(
        client.chat.completions.create(
            model=SMOL,
            messages=FRANCE,
            max_tokens=8,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    streamed = chunks[-1].usage
    assert streamed is not None
    usage["prompt"] += streamed.prompt_tokens
    usage["completion"] += streamed.completion_tokens
    client.embeddings.create(model=MINILM.name, input=["one", "two", "three"])
    fell_back = client.chat.completions.with_raw_response.create(
        model="dead-then-local", messages=FRANCE, max_tokens=8, temperature=0
    )
    assert fell_back.headers["x-inferrelay-attempts"] == "dead=transient"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=FRANCE)

    samples = scrape(server)
    llama = {"model_name": SMOL, "backend": "local/llamacpp"}
    assert value(samples, "inferrelay:requests_total", **llama, outcome="success") == 3
    assert value(samples, "inferrelay:requests_total", model_name="dead-then-local", backend="local/llamacpp",
                 outcome="success") == 1  # fmt: skip
    onnx = {"model_name": MINILM.name, "backend": "local/onnx"}
    assert value(samples, "inferrelay:requests_total", **onnx, outcome="success") == 1
    assert (
        value(samples, "inferrelay:requests_total", model_name="unknown", backend="none", outcome="model_not_found")
        == 1  # a name this server does not know adds no label value of its own (the log keeps it)
    )
    assert value(samples, "inferrelay:fallbacks_total", from_backend="dead", to_backend="local/llamacpp",
                 error_kind="transient") == 1  # fmt: skip
    assert value(samples, "inferrelay:e2e_request_latency_seconds_count", **llama) == 3
    assert value(samples, "inferrelay:time_to_first_token_seconds_count", **llama) == 1  # the one stream
    assert value(samples, "inferrelay:prompt_tokens_total", **llama) == usage["prompt"]
    assert value(samples, "inferrelay:generation_tokens_total", **llama) == usage["completion"]
    assert value(samples, "inferrelay:prompt_tokens_total", **onnx) > 0
    assert value(samples, "inferrelay:requests_in_flight") == 0
    assert value(samples, "inferrelay:num_requests_running", model_name=SMOL) == 0
    assert value(samples, "inferrelay:models_loaded", device="cpu") == 2
    assert value(samples, "inferrelay:memory_held_bytes", device="cpu") > 100 * 2**20
    assert value(samples, "inferrelay:deployment_cooling_down", deployment="dead") == 0  # one failure: not yet

    stats = httpx.get(f"{server.url}/api/v1/runtime/stats", timeout=30).json()["requests"]
    mine = next(s for s in stats if s["model"] == SMOL and s["backend"] == "local/llamacpp")
    assert (mine["requests"], mine["errors"]) == (3, 0)
    assert mine["completion_tokens"] == usage["completion"]
    assert 0 < mine["p50_ms"] <= mine["p95_ms"]
    server.stop()

    env = {**os.environ, "INFERRELAY_HOME": str(home)}
    logs = subprocess.run(
        [sys.executable, "-m", "inferrelay.cli", "logs", "--json", "--limit", "100"], env=env,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    rows = json.loads(logs.stdout)
    assert len(rows) == 6  # 2 chats, a stream, an embeddings request, the fallback, the unknown model
    assert {r["model"] for r in rows} == {SMOL, MINILM.name, "dead-then-local", "nope"}
    fallback_row = next(r for r in rows if r["model"] == "dead-then-local")
    assert fallback_row["attempts"] == [["dead", "transient"]]
    failed = subprocess.run(
        [sys.executable, "-m", "inferrelay.cli", "logs", "--failed"], env=env, capture_output=True, text=True
    )
    assert "nope" in failed.stdout
    assert SMOL not in failed.stdout


def test_every_answered_request_is_in_the_log_after_sigterm_under_load(start_server: Any, tmp_path: Path) -> None:
    home = tmp_path / "home"
    server = start_server(home)
    answered: list[str] = []
    lock = threading.Lock()

    def send() -> None:
        body = {"model": SMOL, "messages": FRANCE, "max_tokens": 24, "temperature": 0}
        try:
            response = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=120)
        except httpx.HTTPError:
            return  # refused once the server stopped accepting: never answered
        if response.status_code == 200:
            with lock:
                answered.append(response.headers["x-request-id"])

    threads = [threading.Thread(target=send) for _ in range(12)]
    for thread in threads:
        thread.start()
        time.sleep(0.05)
    deadline = time.monotonic() + 120
    while not answered and time.monotonic() < deadline:
        time.sleep(0.01)
    server.process.send_signal(signal.SIGTERM)
    for thread in threads:
        thread.join(timeout=180)
    server.process.wait(timeout=120)
    assert server.process.returncode in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after a clean shutdown
    assert answered, "no request was answered before the signal"

    env = {**os.environ, "INFERRELAY_HOME": str(home)}
    logs = subprocess.run(
        [sys.executable, "-m", "inferrelay.cli", "logs", "--json", "--limit", "1000"], env=env,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    logged = {row["request_id"] for row in json.loads(logs.stdout) if row["outcome"] == "success"}
    assert set(answered) <= logged


def test_a_batch_job_shows_its_metrics_on_a_port_while_it_runs(test_home: Path, tmp_path: Path) -> None:
    from tests.conftest import free_port
    from tests.e2e.test_batch import batch, rows_done, sentences, write_input

    source = write_input(tmp_path / "in.jsonl", sentences(600))
    port = free_port()
    out = tmp_path / "out"
    options = ["--shard-size", "200", "--batch-size", "16", "--checkpoint-every", "1", "--metrics-port", str(port)]
    process = batch(test_home, str(source), "-o", str(out), *options)
    seen: dict[Any, float] = {}
    deadline = time.monotonic() + 300
    while process.poll() is None and time.monotonic() < deadline:
        try:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        except httpx.HTTPError:
            time.sleep(0.05)
            continue
        samples = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        if value(samples, "inferrelay:batch_rows_checkpointed") > 0:
            seen = samples
            break
        time.sleep(0.05)
    process.communicate(timeout=300)
    assert process.returncode == 0
    assert seen, "the metrics port never showed a checkpointed row"
    assert value(seen, "inferrelay:batch_rows_in_job") == 600
    done = value(seen, "inferrelay:batch_rows_total", outcome="done")
    checkpointed = value(seen, "inferrelay:batch_rows_checkpointed")
    assert 0 < checkpointed <= 600
    assert checkpointed - 16 <= done <= checkpointed  # one scrape may fall between the two updates of a chunk
    assert rows_done(out) == 600


def test_the_request_id_goes_on_to_the_provider(start_server: Any, test_home: Path, tmp_path: Path) -> None:
    from tests.e2e.test_remote_providers import front_config

    upstream_home = tmp_path / "upstream-home"
    upstream = start_server(upstream_home)
    front = start_server(tmp_path / "front-home", "--config", str(front_config(tmp_path, upstream.url)))
    body = {"model": "remote-smol", "messages": FRANCE, "max_tokens": 4, "temperature": 0}
    response = httpx.post(
        f"{front.url}/v1/chat/completions", json=body, headers={"x-request-id": "abc-123"}, timeout=120
    )
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "abc-123"
    upstream.stop()
    env = {**os.environ, "INFERRELAY_HOME": str(upstream_home)}
    logs = subprocess.run(
        [sys.executable, "-m", "inferrelay.cli", "logs", "--json"], env=env, capture_output=True, text=True
    )
    assert [row["request_id"] for row in json.loads(logs.stdout)] == ["abc-123"]
