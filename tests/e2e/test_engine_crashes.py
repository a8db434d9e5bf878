"""Engines that really die, in real server processes: the fake engine kills its own worker with a real signal,
and a real llama.cpp worker is SIGKILLed from outside. The server lives on and the request is answered."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from inferrelay.config.embedded import MINILM, SMOLLM2
from tests.conftest import FRANCE

pytestmark = pytest.mark.slow

TEXTS = ["The cat sat on the mat.", "A dog ran in the park."]


def start_with(start_server: Any, home: Path, mappings: str) -> Any:
    config = home / "crash-config"
    config.mkdir(exist_ok=True)
    (config / "model-mappings.yaml").write_text(mappings)
    return start_server(home, "--config", str(config))


def crashing(engines: str, crash: str, fail_on: str) -> str:
    fake = f"{{crash: {crash}, fail_on: {fail_on}, isolation: process}}"
    return f"{{engines: {engines}, engine_options: {{fake: {fake}}}}}"


def embed(server: Any) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/embeddings", json={"model": MINILM.name, "input": TEXTS}, timeout=300)


def model_view(server: Any, name: str) -> dict[str, Any]:
    return httpx.get(f"{server.url}/api/v1/runtime/models/{name}", timeout=30).json()  # type: ignore[no-any-return]


def workers_of(view: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {w["engine"]: w for w in view["workers"]}


def alive(server: Any) -> None:
    assert server.process.poll() is None
    assert httpx.get(f"{server.url}/health", timeout=10).status_code == 200


def test_a_crash_loop_falls_back_each_time_then_opens_the_cooldown(
    start_server: Any, test_home: Path, tmp_path: Path
) -> None:
    mappings = (
        "runtime: {crash_backoff: 0, crash_limit: 3}\n"
        f"models:\n  {MINILM.name}: {crashing('[fake, onnx]', 'sigsegv', 'request')}\n"
    )
    server = start_with(start_server, test_home, mappings)
    pid = server.process.pid
    for _ in range(3):
        response = embed(server)
        assert response.status_code == 200, response.text
        assert response.headers["x-inferrelay-backend"] == "local/onnx"
        assert response.headers["x-inferrelay-attempts"] == "local/fake=engine_crashed"
    response = embed(server)
    assert response.status_code == 200
    assert response.headers["x-inferrelay-attempts"] == "local/fake=cooling_down"
    assert server.process.pid == pid
    alive(server)

    view = model_view(server, MINILM.name)
    fake = workers_of(view)["fake"]
    assert fake["restarts"] == 2
    assert len(fake["recent_crashes"]) == 3
    assert all("died of SIGSEGV (segmentation fault)" in c["message"] for c in fake["recent_crashes"])
    assert fake["state"].startswith("cooling down: 3 crashes")
    assert [e["what"] for e in view["events"]].count("crashed") == 3
    (onnx,) = view["loaded"]
    worker = onnx["worker"]
    assert worker["pid"] != pid
    assert worker["alive"] is True
    assert worker["resident_bytes"] > 0
    assert worker["restarts"] == 0
    cmdline = Path(f"/proc/{worker['pid']}/cmdline").read_bytes().split(b"\0")
    assert [b"--engine", b"onnx", b"--model", MINILM.name.encode()] == cmdline[3:7]

    status = httpx.get(f"{server.url}/api/v1/engines/fake", timeout=30).json()
    assert status["last_failure"]["kind"] == "engine_crashed"
    assert "SIGSEGV" in status["last_failure"]["reason"]
    assert status["available"] is True, "a crash is not a verdict on the engine"


def test_a_crash_after_the_first_token_ends_the_stream_with_an_error_event(
    start_server: Any, test_home: Path
) -> None:
    mappings = (
        "models:\n  crashy:\n    source: fake\n    capabilities: [chat]\n    engines: [fake]\n"
        "    engine_options: {fake: {crash: sigabrt, fail_on: stream, isolation: process}}\n"
    )
    server = start_with(start_server, test_home, mappings)
    body = {"model": "crashy", "messages": [{"role": "user", "content": "alpha beta gamma"}], "stream": True}
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, timeout=60) as response:
        assert response.status_code == 200
        lines = [line.removeprefix("data: ") for line in response.iter_lines() if line]
    error = json.loads(lines[-2])["error"]
    assert error["code"] == "engine_crashed"
    assert "died of SIGABRT (aborted)" in error["message"]
    text = "".join(json.loads(x)["choices"][0]["delta"].get("content", "") for x in lines[:-2])
    assert text == "echo:", "the token sent before the crash stays sent"
    alive(server)


def test_a_crash_before_the_first_token_is_answered_by_the_next_engine(start_server: Any, test_home: Path) -> None:
    mappings = f"models:\n  {SMOLLM2.name}: {crashing('[fake, onnx]', 'exit', 'request')}\n"
    server = start_with(start_server, test_home, mappings)
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    with client.chat.completions.with_streaming_response.create(
        model=SMOLLM2.name, messages=FRANCE, temperature=0, max_tokens=12, stream=True
    ) as response:
        assert response.headers["x-inferrelay-backend"] == "local/onnx"
        assert response.headers["x-inferrelay-attempts"] == "local/fake=engine_crashed"
        text = "".join(c.choices[0].delta.content or "" for c in response.parse() if c.choices)
    assert text.strip()
    crash = workers_of(model_view(server, SMOLLM2.name))["fake"]["recent_crashes"][0]
    assert "died of exit code 3" in crash["message"]
    alive(server)


def test_an_illegal_instruction_before_serving_makes_the_engine_unusable_with_the_fix(
    start_server: Any, test_home: Path
) -> None:
    mappings = f"models:\n  {MINILM.name}: {crashing('[fake, onnx]', 'sigill', 'load')}\n"
    server = start_with(start_server, test_home, mappings)
    for _ in range(2):
        response = embed(server)
        assert response.status_code == 200, response.text
        assert response.headers["x-inferrelay-backend"] == "local/onnx"
        assert response.headers["x-inferrelay-attempts"] == "local/fake=engine_unavailable"
    fake = workers_of(model_view(server, MINILM.name))["fake"]
    assert fake["restarts"] == 0, "a build that cannot run here is not started again"
    assert "SIGILL before serving" in fake["state"]
    assert "built for instructions this CPU cannot run" in fake["state"]
    assert httpx.get(f"{server.url}/api/v1/engines/fake", timeout=30).json()["available"] is True, "for this model only"
    alive(server)


def test_sigkill_to_the_llama_cpp_worker_mid_request_is_answered_by_onnx(start_server: Any, test_home: Path) -> None:
    server = start_with(start_server, test_home, f"models:\n  {SMOLLM2.name}: {{engines: [llamacpp, onnx]}}\n")
    pid = server.process.pid
    warm = httpx.post(f"{server.url}/v1/completions", json={"model": SMOLLM2.name, "prompt": "Hi", "max_tokens": 2})
    assert warm.headers["x-inferrelay-backend"] == "local/llamacpp"
    (slot,) = model_view(server, SMOLLM2.name)["loaded"]
    worker = slot["worker"]["pid"]
    answers: list[httpx.Response] = []
    counting = {"model": SMOLLM2.name, "prompt": "1, 2, 3, 4, 5, 6, 7, 8,", "temperature": 0, "max_tokens": 600}
    request = threading.Thread(
        target=lambda: answers.append(httpx.post(f"{server.url}/v1/completions", json=counting, timeout=300))
    )
    request.start()
    deadline = time.monotonic() + 60
    while model_view(server, SMOLLM2.name)["loaded"][0]["active"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)  # until the worker is generating
    time.sleep(0.3)
    os.kill(worker, signal.SIGKILL)
    request.join(timeout=300)
    (response,) = answers
    assert response.status_code == 200, response.text
    assert response.headers["x-inferrelay-backend"] == "local/onnx"
    assert response.headers["x-inferrelay-attempts"] == "local/llamacpp=engine_crashed"
    assert server.process.pid == pid
    alive(server)
    view = model_view(server, SMOLLM2.name)
    crash = workers_of(view)["llamacpp"]["recent_crashes"][0]
    assert f"(pid {worker}) died of SIGKILL (killed)" in crash["message"]
    assert all(s["engine"] != "llamacpp" for s in view["loaded"]), "the dead worker's memory left the accounting"


def test_a_worker_stream_that_fails_before_its_first_piece_leaves_the_model_usable(
    start_server: Any, test_home: Path
) -> None:
    """An error (not a death) in a worker's stream is its last word: the next request finds a clean socket."""
    mappings = (
        "models:\n  failing:\n    source: fake\n    capabilities: [chat]\n    engines: [fake]\n"
        "    engine_options:\n"
        "      fake: {fail_kind: context_length, fail_on: request, fail_rate: 0.5, isolation: process}\n"
    )
    server = start_with(start_server, test_home, mappings)
    body = {"model": "failing", "messages": [{"role": "user", "content": "alpha beta"}], "stream": True}
    statuses = []
    for _ in range(6):
        response = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=30)
        statuses.append(response.status_code)
    assert set(statuses) == {200, 400}, statuses  # seeded draws: some fail, and the worker serves on after each
    alive(server)
