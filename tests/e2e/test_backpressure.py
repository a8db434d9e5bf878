"""Bounded queues in a real server process: a burst against a model with max_queue 1 never gets a 5xx and never hangs;
the overflow is answered by the chain's next step, or with 429 and Retry-After where there is none; /ready says
false while the queue is full and true after.

The fake engine is slow on purpose (latency_ms per token): this tests the runtime's queueing, not an engine. Two
long requests hold the slow model full (one running, one waiting) while the bursts arrive; every wait is bounded.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.slow

BURST = 20
BOUND_S = 60
LONG = " ".join(f"w{i}" for i in range(24))  # 25 tokens at 250 ms: the queue stays full for seconds
MAPPINGS = """\
models:
  slow:
    source: fake
    capabilities: [chat, completion]
    engines: [fake]
    max_queue: 1
    engine_options: {fake: {latency_ms: 250}}
  spare:
    source: fake
    capabilities: [chat, completion]
    engines: [fake]
exact_matches:
  burst: {chain: slow-then-spare}
fallback_chains:
  slow-then-spare:
    - {provider: local, model: slow}
    - {provider: local, model: spare}
"""


def chat(url: str, model: str, text: str = "hi", max_tokens: int = 2) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": max_tokens}
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=BOUND_S)


def burst(pool: ThreadPoolExecutor, send: Callable[[], httpx.Response]) -> list[httpx.Response]:
    futures = [pool.submit(send) for _ in range(BURST)]
    return [f.result(timeout=BOUND_S) for f in futures]


def until(check: Callable[[], bool], what: str) -> None:
    """Poll `check` until it holds; a bound, not a timing assertion: failing it means the state never came."""
    deadline = time.monotonic() + BOUND_S
    while not check():
        assert time.monotonic() < deadline, f"never saw: {what}"
        time.sleep(0.05)


def gauge(url: str, name: str, model: str) -> float | None:
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=BOUND_S).text):
        for sample in family.samples:
            if sample.name == name and sample.labels == {"model_name": model}:
                return float(sample.value)
    return None


def test_a_burst_against_a_full_queue_falls_back_or_gets_429_and_ready_follows_the_queue(
    start_server: Any, tmp_path: Path
) -> None:
    config = tmp_path / "config"
    config.mkdir()
    (config / "model-mappings.yaml").write_text(MAPPINGS)
    server = start_server(tmp_path / "home", "--config", str(config))
    url = server.url
    for model in ("slow", "spare"):  # loaded before the bursts, so the bursts meet queues, not loads
        assert chat(url, model, max_tokens=1).status_code == 200
    assert httpx.get(f"{url}/ready", timeout=BOUND_S).json()["ready"] is True

    with ThreadPoolExecutor(max_workers=BURST + 2) as pool:
        long: list[Future[httpx.Response]] = [
            pool.submit(chat, url, "slow", LONG, 25) for _ in range(2)
        ]  # one runs, one waits: the queue is full
        until(lambda: httpx.get(f"{url}/ready", timeout=BOUND_S).status_code == 503, "/ready 503")
        not_ready = httpx.get(f"{url}/ready", timeout=BOUND_S).json()
        assert not_ready["ready"] is False
        assert any(reason.startswith("slow on fake: queue full") for reason in not_ready["reasons"])
        assert gauge(url, "inferrelay:num_requests_waiting", "slow") == 1
        assert gauge(url, "inferrelay:num_requests_running", "slow") == 1
        stats = httpx.get(f"{url}/api/v1/runtime/stats", timeout=BOUND_S).json()["models"]["slow"]["queue"]
        assert (stats["max_queue"], stats["parallel"]) == (1, 1)

        chained = burst(pool, lambda: chat(url, "burst"))
        direct = burst(pool, lambda: chat(url, "slow"))
        long_answers = [f.result(timeout=BOUND_S) for f in long]

    for response in [*chained, *direct, *long_answers]:
        assert response.status_code < 500, response.text
    assert all(r.status_code == 200 for r in long_answers)

    assert all(r.status_code == 200 for r in chained), [r.text for r in chained if r.status_code != 200]
    fell_back = [r for r in chained if r.headers["x-inferrelay-attempts"] == "local/fake=overloaded"]
    assert fell_back, "the chain's next step answered the overflow"

    refused = [r for r in direct if r.status_code == 429]
    assert refused, "with no next step the overflow is refused"
    assert all(r.status_code in (200, 429) for r in direct)
    for response in refused:
        assert int(response.headers["retry-after"]) >= 1
        assert response.headers["x-inferrelay-attempts"] == "local/fake=overloaded"
        error = response.json()["error"]
        assert (error["code"], error["type"]) == ("overloaded", "rate_limit_error")

    ready = httpx.get(f"{url}/ready", timeout=BOUND_S)
    assert ready.status_code == 200, ready.text
    assert ready.json()["ready"] is True
    assert gauge(url, "inferrelay:num_requests_waiting", "slow") == 0
    engine = httpx.get(f"{url}/api/v1/engines/fake", timeout=BOUND_S).json()
    assert engine["last_failure"] is None, "a full queue is not an engine failure"
    assert server.process.poll() is None
