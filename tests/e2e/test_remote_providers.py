"""A second inferrelay process as a real upstream provider: pass-through, streaming, and fallback when it dies."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import FRANCE
from tests.references import llama_cpp_chat

pytestmark = pytest.mark.slow


def front_config(tmp_path: Path, upstream_url: str, health_interval_s: float = 0) -> Path:
    folder = tmp_path / "front-config"
    folder.mkdir()
    (folder / "providers.yaml").write_text(
        "providers:\n"
        "  up:\n"
        "    type: openai_compatible\n"
        f"    base_url: {upstream_url}/v1\n"
        "    max_retries: 1\n"
        "    cooldown_s: 300\n"  # longer than any request here, however loaded the machine
        f"    health_interval_s: {health_interval_s}\n"
        "    timeouts: {connect_s: 2, read_s: 60}\n"
        "    models: [smollm2-135m-instruct, all-minilm-l6-v2]\n"
    )
    (folder / "model-mappings.yaml").write_text(
        "exact_matches:\n"
        "  remote-smol: {chain: up-then-local}\n"
        "  remote-embed: {provider: up, model: all-minilm-l6-v2}\n"
        "fallback_chains:\n"
        "  up-then-local:\n"
        "    - {provider: up, model: smollm2-135m-instruct}\n"
        "    - {provider: local, model: smollm2-135m-instruct}\n"
    )
    return folder


def answer_text(response: httpx.Response, stream: bool) -> str:
    if not stream:
        return str(response.json()["choices"][0]["message"]["content"])
    events = [line.removeprefix("data: ") for line in response.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return "".join(c["delta"].get("content") or "" for e in events[:-1] for c in json.loads(e)["choices"])


@pytest.fixture
def pair(start_server: Any, test_home: Path, tmp_path: Path) -> tuple[Any, Any]:
    upstream = start_server(test_home)
    front = start_server(test_home, "--config", str(front_config(tmp_path, upstream.url)))
    return front, upstream


def test_requests_pass_through_with_the_callers_model_name(pair: tuple[Any, Any]) -> None:
    front, _ = pair
    client = openai.OpenAI(base_url=f"{front.url}/v1", api_key="unused", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="remote-smol", messages=FRANCE, temperature=0, max_tokens=30
    )
    answer = raw.parse()
    assert raw.headers["x-inferrelay-backend"] == "up"
    assert raw.headers["x-inferrelay-attempts"] == ""
    assert answer.model == "remote-smol"
    expected = llama_cpp_chat(FRANCE, 30).text  # the upstream's llamacpp engine answers as llama-cpp-python does
    assert answer.choices[0].message.content == expected

    chunks = list(
        client.chat.completions.create(model="remote-smol", messages=FRANCE, temperature=0, max_tokens=30, stream=True)
    )
    assert {c.model for c in chunks} == {"remote-smol"}
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected

    embedded = client.embeddings.create(model="remote-embed", input=["hello", "world"], encoding_format="float")
    assert embedded.model == "remote-embed"
    assert [len(d.embedding) for d in embedded.data] == [384, 384]
    assert "remote-smol" in {m.id for m in client.models.list()}


def test_an_upstream_caller_error_is_passed_back_without_fallback(pair: tuple[Any, Any]) -> None:
    front, _ = pair
    body = {"model": "remote-smol", "messages": FRANCE, "max_tokens": 4000}
    response = httpx.post(f"{front.url}/v1/chat/completions", json=body, timeout=60)
    assert response.status_code == 400
    assert "provider 'up' answered 400" in response.json()["error"]["message"]


def test_a_dead_upstream_falls_back_then_cools_down(pair: tuple[Any, Any]) -> None:
    front, upstream = pair
    upstream.stop()
    expected_attempts = [
        "up=transient,up=transient",  # one retry, then the local step
        "up=transient",  # the third failure opens the circuit: no more retries
        "up=cooling_down",  # skipped at once while it cools down
    ]
    expected = llama_cpp_chat(FRANCE, 30).text
    for stream, attempts in zip((False, True, False), expected_attempts, strict=True):
        body = {"model": "remote-smol", "messages": FRANCE, "temperature": 0, "max_tokens": 30, "stream": stream}
        response = httpx.post(f"{front.url}/v1/chat/completions", json=body, timeout=120)
        assert response.status_code == 200, response.text
        assert response.headers["x-inferrelay-backend"] == "local/llamacpp"
        assert response.headers["x-inferrelay-attempts"] == attempts
        assert answer_text(response, stream) == expected, "the local step's answer, whole"


def test_providers_status_and_health_checks(start_server: Any, test_home: Path, tmp_path: Path) -> None:
    upstream = start_server(test_home)
    front = start_server(test_home, "--config", str(front_config(tmp_path, upstream.url, health_interval_s=0.3)))
    body = {"model": "remote-smol", "messages": FRANCE, "temperature": 0, "max_tokens": 5}
    assert httpx.post(f"{front.url}/v1/chat/completions", json=body, timeout=60).headers["x-inferrelay-backend"] == "up"
    (status,) = httpx.get(f"{front.url}/api/v1/providers").json()["providers"]
    assert (status["name"], status["healthy"], status["requests"], status["in_flight"]) == ("up", True, 1, 0)
    assert status["latency_ms"] > 0
    assert status["health_checked_at"] is not None
    assert status["cooldown"]["state"] == "closed"

    upstream.stop()
    deadline = time.monotonic() + 10
    while httpx.get(f"{front.url}/api/v1/providers").json()["providers"][0]["healthy"]:
        assert time.monotonic() < deadline, "the health check never noticed the upstream was gone"
        time.sleep(0.2)
    response = httpx.post(f"{front.url}/v1/chat/completions", json=body, timeout=60)
    assert response.headers["x-inferrelay-backend"] == "local/llamacpp"
    assert response.headers["x-inferrelay-attempts"] == "up=engine_unavailable", "skipped without a try"
