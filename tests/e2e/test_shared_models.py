"""`serve --workers 2` loads each local model once for the machine: both server processes call one engine worker,
started under their parent by the model host (runtime/model_host.py), which starts one again after a crash."""

from __future__ import annotations

import os
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.e2e.test_draining import alive, until

pytestmark = pytest.mark.slow
MODEL = "all-minilm-l6-v2"
CHAT = "smollm2-135m-instruct"
BOUND_S = 60
ROUNDS = 30  # rounds of eight requests at once, until both servers have served one: a bound, not a timing


def embed(url: str) -> httpx.Response:
    body = {"model": MODEL, "input": ["one copy of the weights for the machine"]}
    return httpx.post(f"{url}/v1/embeddings", json=body, timeout=BOUND_S)  # a connection of its own each time


def children(pid: int) -> list[int]:
    """Every thread's children (the host starts workers from a thread of its own)."""
    return [int(c) for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()]


def command_line(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


def workers_of(pid: int) -> list[tuple[str, str]]:
    """(engine, model) of each live engine worker `pid` started."""
    found = []
    for child in children(pid):
        line = command_line(child)
        if "inferrelay.runtime.worker_main" in line and alive(str(child)):
            found.append((line[line.index("--engine") + 1], line[line.index("--model") + 1]))
    return found


def shared_worker(url: str, model: str = MODEL) -> dict[str, Any] | None:
    """The model's worker as the server that answers sees it (either of the two)."""
    models = httpx.get(f"{url}/api/v1/runtime/models", timeout=BOUND_S).json()["models"]
    loaded = next(m for m in models if m["name"] == model)["loaded"]
    worker: dict[str, Any] | None = loaded[0]["worker"] if loaded else None
    return worker


def until_both_servers_hold_it(url: str, model: str = MODEL) -> list[httpx.Response]:
    answers: list[httpx.Response] = []
    with ThreadPoolExecutor(8) as pool:
        for _ in range(ROUNDS):
            answers += pool.map(lambda _: embed(url) if model == MODEL else chat(url), range(8))
            worker = shared_worker(url, model)
            if worker is not None and worker["servers"] == 2:
                return answers
    raise AssertionError(f"after {ROUNDS * 8} requests the two servers never both held {model}")


def chat(url: str) -> httpx.Response:
    body = {"model": CHAT, "messages": [{"role": "user", "content": "Hi."}], "max_tokens": 2}
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=BOUND_S)


def test_two_server_processes_share_one_worker_per_model(start_server: Any, own_home: Path) -> None:
    server = start_server(own_home, "--workers", "2")
    parent = server.process.pid
    servers = children(parent)
    assert len(servers) == 2
    assert all("serve" in command_line(pid) for pid in servers)

    answers = until_both_servers_hold_it(server.url)
    assert {a.status_code for a in answers} == {200}
    # one model, one answer, whichever server was asked; to the last bits only where the same number of requests
    # shared a batch (onnxruntime's matrix product takes other paths for 1 row and for 8)
    vectors = np.array([a.json()["data"][0]["embedding"] for a in answers])
    np.testing.assert_allclose(vectors, np.broadcast_to(vectors[0], vectors.shape), rtol=0, atol=1e-6)
    assert workers_of(parent).count(("onnx", MODEL)) == 1, workers_of(parent)
    assert all(workers_of(child) == [] for child in servers), "no server process starts a worker of its own"
    worker = shared_worker(server.url)
    assert worker is not None
    assert worker["pid"] in children(parent)

    os.kill(worker["pid"], signal.SIGKILL)  # each server finds it dead; the host starts one, not two
    after = until_both_servers_hold_it(server.url)
    assert {a.status_code for a in after} == {200}, [a.text for a in after if a.status_code != 200]
    again = shared_worker(server.url)
    assert again is not None
    assert again["pid"] != worker["pid"]
    assert again["servers"] == 2
    machine = workers_of(parent)
    assert len(machine) == len(set(machine)) == 1, f"one worker for the model: {machine}"
    assert all(workers_of(child) == [] for child in servers)

    started = [c for c in children(parent) if "inferrelay.runtime.worker_main" in command_line(c)]
    assert started
    server.process.send_signal(signal.SIGTERM)
    server.process.wait(timeout=BOUND_S)
    until(lambda: not any(alive(str(pid)) for pid in started), "every worker gone with the servers")


def test_streams_from_both_servers_through_one_chat_worker(start_server: Any, own_home: Path) -> None:
    """Greedy chat with the official client: streamed and whole, from either server, is one answer; a stream closed
    early by one caller leaves the others going (cancels are per server connection in the shared worker)."""
    from openai import OpenAI

    server = start_server(own_home, "--workers", "2")
    assert {a.status_code for a in until_both_servers_hold_it(server.url, CHAT)} == {200}
    clients = [OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0) for _ in range(8)]
    messages = [{"role": "user", "content": "Name a river."}]

    def whole(client: OpenAI) -> str:
        answer = client.chat.completions.create(model=CHAT, messages=messages, max_tokens=12, temperature=0)
        return answer.choices[0].message.content or ""

    def streamed(client: OpenAI, stop_after: int | None = None) -> str:
        text = ""
        with client.chat.completions.create(
            model=CHAT, messages=messages, max_tokens=12, temperature=0, stream=True
        ) as stream:
            for number, chunk in enumerate(stream):
                if chunk.choices and chunk.choices[0].delta.content:
                    text += chunk.choices[0].delta.content
                if stop_after is not None and number >= stop_after:
                    break
        return text

    with ThreadPoolExecutor(8) as pool:
        cut = [pool.submit(streamed, c, 2) for c in clients[:2]]
        full = list(pool.map(lambda c: streamed(c), clients[2:]))
        answers = list(pool.map(whole, clients))
        assert all(isinstance(f.result(timeout=BOUND_S), str) for f in cut)
    assert len(set(full + answers)) == 1, set(full + answers)
    assert full[0], "an answer with text"
    assert workers_of(server.process.pid) == [("llamacpp", CHAT)], "one chat worker for both servers"
