"""Retries on the same upstream, then fallback: 429s and timeouts injected on cue by an upstream's fake engine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import FRANCE

pytestmark = pytest.mark.slow

UPSTREAM_MODELS = """fallback: false
models:
  always-429:
    source: fake
    capabilities: [chat]
    engines: [fake]
    engine_options: {fake: {fail_kind: rate_limited}}
  429-once:
    source: fake
    capabilities: [chat]
    engines: [fake]
    engine_options: {fake: {fail_kind: rate_limited, fail_rate: 0.5, seed: 1}}
  slow:
    source: fake
    capabilities: [chat]
    engines: [fake]
    engine_options: {fake: {latency_ms: 1500}}
  breaks-mid-stream:
    source: fake
    capabilities: [chat]
    engines: [fake]
    engine_options: {fake: {fail_kind: transient, fail_on: stream}}
"""
NAMES = ("always-429", "429-once", "slow", "breaks-mid-stream")


def write(folder: Path, name: str, text: str) -> None:
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(text)


@pytest.fixture
def front(start_server: Any, test_home: Path, tmp_path: Path) -> Any:
    write(tmp_path / "up", "model-mappings.yaml", UPSTREAM_MODELS)
    upstream = start_server(tmp_path / "up-home", "--config", str(tmp_path / "up"))
    config = tmp_path / "front"
    write(
        config,
        "providers.yaml",
        "providers:\n  up:\n    type: openai_compatible\n"
        f"    base_url: {upstream.url}/v1\n    health_interval_s: 0\n    max_retries: 2\n"
        "    timeouts: {connect_s: 2, read_s: 0.5}\n",
    )
    chains = "".join(f"  {name}: {{chain: {name}-chain}}\n" for name in NAMES)
    steps = "".join(
        f"  {name}-chain:\n    - {{provider: up, model: {name}}}\n"
        "    - {provider: local, model: smollm2-135m-instruct}\n"
        for name in NAMES
    )
    write(config, "model-mappings.yaml", f"exact_matches:\n{chains}fallback_chains:\n{steps}")
    return start_server(test_home, "--config", str(config))


def ask(front: Any, model: str) -> httpx.Response:
    body = {"model": model, "messages": FRANCE, "temperature": 0, "max_tokens": 20}
    return httpx.post(f"{front.url}/v1/chat/completions", json=body, timeout=120)


def test_429_is_retried_then_falls_back(front: Any) -> None:
    response = ask(front, "always-429")
    assert response.status_code == 200, response.text
    assert response.headers["x-inferrelay-attempts"] == "up=rate_limited,up=rate_limited,up=rate_limited"
    assert response.headers["x-inferrelay-backend"] == "local/llamacpp"


def test_a_retry_that_succeeds_stays_on_the_upstream(front: Any) -> None:
    response = ask(front, "429-once")
    assert response.status_code == 200, response.text
    assert response.headers["x-inferrelay-backend"] == "up"
    assert response.headers["x-inferrelay-attempts"] == "up=rate_limited"
    assert response.json()["choices"][0]["message"]["content"].startswith("echo:")


def test_timeouts_are_retried_then_fall_back(front: Any) -> None:
    response = ask(front, "slow")
    assert response.status_code == 200, response.text
    assert response.headers["x-inferrelay-attempts"] == "up=timeout,up=timeout,up=timeout"
    assert response.headers["x-inferrelay-backend"] == "local/llamacpp"


def test_an_upstream_stream_that_breaks_after_its_first_token_ends_with_an_error_event(front: Any) -> None:
    body = {"model": "breaks-mid-stream", "messages": FRANCE, "max_tokens": 20, "stream": True}
    with httpx.stream("POST", f"{front.url}/v1/chat/completions", json=body, timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["x-inferrelay-backend"] == "up", "no fallback once a token is sent"
        lines = [line.removeprefix("data: ") for line in response.iter_lines() if line]
    assert lines[-1] == "[DONE]"
    assert json.loads(lines[-2])["error"]["code"] == "transient"
    sent = [json.loads(line) for line in lines[:-2]]
    assert {event["model"] for event in sent} == {"breaks-mid-stream"}
    assert "".join(e["choices"][0]["delta"].get("content", "") for e in sent) == "echo:"
