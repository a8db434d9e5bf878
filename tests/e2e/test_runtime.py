"""The runtime for real: registered models served by both APIs, memory, eviction, keep_alive, one load.

Each test has its own INFERRELAY_HOME (its registry), sharing the test home's
cache of ONNX exports; the GGUF the tests register is a copy of the embedded
one under the home's model root.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from inferrelay.config.embedded import MINILM, SMOLLM2
from inferrelay.config.sources import resolve_source
from inferrelay.runtime.placement import estimate_for
from tests.conftest import FRANCE
from tests.references import llama_cpp_chat, llama_cpp_completion

pytestmark = pytest.mark.slow

GGUF = resolve_source(SMOLLM2.source).path


@pytest.fixture
def home(tmp_path: Path, test_home: Path) -> Path:
    home = tmp_path / "home"
    (home / "models").mkdir(parents=True)
    (test_home / "cache").mkdir(exist_ok=True)
    (home / "cache").symlink_to(test_home / "cache")
    shutil.copyfile(GGUF, home / "models" / "my-smol.gguf")
    return home


def api(server: Any, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
    return httpx.request(method, f"{server.url}/api/v1/runtime{path}", json=body, timeout=300)


def chat(server: Any, model: str, **extra: Any) -> httpx.Response:
    body = {"model": model, "messages": FRANCE, "temperature": 0, "max_tokens": 12, **extra}
    return httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=300)


def wait_for_state(server: Any, name: str, state: str, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        view: dict[str, Any] = api(server, "GET", f"/models/{name}").json()
        if view["state"] == state:
            return view
        assert time.monotonic() < deadline, f"{name} stayed {view['state']}, never {state}: {view['events']}"
        time.sleep(0.2)


def test_register_load_serve_unload_and_survive_a_restart(start_server: Any, home: Path) -> None:
    server = start_server(home)
    registered = api(server, "POST", "/models/register", {"name": "my-smol", "source": "my-smol.gguf"})
    assert registered.status_code == 201, registered.text
    assert registered.json()["capabilities"] == ["chat", "completion"]
    assert registered.json()["engines"] == ["llamacpp", "onnx", "torch"]
    assert registered.json()["state"] == "unloaded"

    loaded = api(server, "POST", "/models/load", {"name": "my-smol"})
    assert loaded.status_code == 200, loaded.text
    assert loaded.headers["x-inferrelay-backend"] == "local/llamacpp"
    memory = loaded.json()["memory"]
    assert memory["measured_bytes"] > 0
    assert memory["estimated"]["total"] > memory["estimated"]["weights"] > 0
    assert loaded.json()["device"] == "cpu"
    assert loaded.json()["dtype"] == "float32"

    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    answer = client.chat.completions.create(model="my-smol", messages=FRANCE, temperature=0, max_tokens=12)
    expected = llama_cpp_chat(FRANCE, 12).text  # llama-cpp-python's own answer from the same weights
    assert answer.choices[0].message.content == expected
    assert "my-smol" in {m.id for m in client.models.list()}

    generated = api(
        server,
        "POST",
        "/generate",
        {"model": "my-smol", "prompt": "The capital of France is", "max_tokens": 5, "temperature": 0},
    )
    assert generated.status_code == 200, generated.text
    assert generated.json()["choices"][0]["text"] == llama_cpp_completion("The capital of France is", 5).text
    streamed = api(
        server,
        "POST",
        "/generate",
        {"model": "my-smol", "messages": FRANCE, "stream": True, "temperature": 0, "max_tokens": 12},
    )
    events = [line.removeprefix("data: ") for line in streamed.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert "".join(json.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[:-1]) == expected

    stats = api(server, "GET", "/stats").json()
    assert stats["models"]["my-smol"]["loaded"][0]["requests"] == 3
    held = stats["devices"]["cpu"]["measured_bytes"]
    assert held >= memory["measured_bytes"]

    unloaded = api(server, "POST", "/models/unload", {"name": "my-smol"})
    assert unloaded.json()["state"] == "unloaded"
    assert [e["what"] for e in unloaded.json()["unloaded"]] == ["unloaded"]
    after = api(server, "GET", "/stats").json()
    assert after["devices"].get("cpu", {"measured_bytes": 0})["measured_bytes"] == held - memory["measured_bytes"]
    assert after["models"]["my-smol"]["state"] == "unloaded"

    server.stop()
    again = start_server(home)
    view = api(again, "GET", "/models/my-smol")
    assert view.status_code == 200
    assert view.json()["registered_at"] == registered.json()["registered_at"]
    assert chat(again, "my-smol").json()["choices"][0]["message"]["content"] == expected


def test_bad_registrations_get_a_clear_4xx_and_change_nothing(start_server: Any, home: Path, tmp_path: Path) -> None:
    models = home / "models"
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copyfile(GGUF, outside / "elsewhere.gguf")
    (models / "escape.gguf").symlink_to(outside / "elsewhere.gguf")
    (models / "notes.txt").write_text("not a model")
    with GGUF.open("rb") as whole, (models / "cut.gguf").open("wb") as cut:
        cut.write(whole.read(GGUF.stat().st_size // 2))
    server = start_server(home)
    assert api(server, "POST", "/models/register", {"name": "taken", "source": "my-smol.gguf"}).status_code == 201
    before = api(server, "GET", "/models").json()

    cases = [
        ({"name": "a", "source": "missing.gguf"}, 400, "does not exist"),
        ({"name": "b", "source": str(outside / "elsewhere.gguf")}, 400, "not a path under the model roots"),
        ({"name": "c", "source": "../outside/elsewhere.gguf"}, 400, ".."),
        ({"name": "d", "source": "escape.gguf"}, 400, "not a path under the model roots"),
        ({"name": "e", "source": "notes.txt"}, 400, "GGUF"),
        ({"name": "taken", "source": "my-smol.gguf"}, 409, "already"),
        ({"name": SMOLLM2.name, "source": "my-smol.gguf"}, 409, "already"),
        ({"name": "f", "source": "cut.gguf"}, 400, "truncated"),
        ({"name": "g", "source": "my-smol.gguf", "capabilities": ["dance"]}, 400, "capabilities"),
    ]
    for body, status, words in cases:
        response = api(server, "POST", "/models/register", body)
        assert response.status_code == status, (body, response.text)
        assert words in response.json()["error"]["message"], (body, response.text)
    assert api(server, "GET", "/models").json() == before


def test_a_budget_for_one_model_evicts_the_idle_one_and_never_the_pinned(start_server: Any, home: Path) -> None:
    smol, minilm = estimate_for(SMOLLM2, "llamacpp", "float32"), estimate_for(MINILM, "onnx", "float32")
    assert smol is not None
    assert minilm is not None
    budget = smol.total + minilm.total - 1
    config = home / "config"
    config.mkdir()
    runtime = f"runtime:\n  memory_budget: {{cpu: {budget}}}\n"
    (config / "model-mappings.yaml").write_text(runtime)
    server = start_server(home, "--config", str(config))
    assert chat(server, SMOLLM2.name).status_code == 200
    embedded = httpx.post(f"{server.url}/v1/embeddings", json={"model": MINILM.name, "input": ["hi"]}, timeout=300)
    assert embedded.status_code == 200, embedded.text
    view = api(server, "GET", f"/models/{SMOLLM2.name}").json()
    assert view["state"] == "unloaded"
    assert [e["what"] for e in view["events"]] == ["evicted"]
    assert MINILM.name in view["events"][0]["detail"]
    server.stop()

    pin = f"models:\n  {SMOLLM2.name}: {{pinned: true}}\n"
    (config / "model-mappings.yaml").write_text(runtime + pin)
    pinned = start_server(home, "--config", str(config))
    assert chat(pinned, SMOLLM2.name).status_code == 200
    lowered = httpx.post(f"{pinned.url}/v1/embeddings", json={"model": MINILM.name, "input": ["hi"]}, timeout=300)
    assert lowered.status_code == 200, lowered.text  # fp32 does not fit beside the pinned model; int8 does
    assert lowered.headers["x-inferrelay-remediation"] == "local/onnx:lower_precision(float32 -> int8, to load)"
    assert api(pinned, "GET", f"/models/{SMOLLM2.name}").json()["state"] == "loaded"
    pinned.stop()

    int8 = estimate_for(MINILM, "onnx", "int8")
    assert int8 is not None
    (config / "model-mappings.yaml").write_text(
        f"runtime:\n  memory_budget: {{cpu: {smol.total + int8.total - 1}}}\n" + pin
    )
    cramped = start_server(home, "--config", str(config))
    assert chat(cramped, SMOLLM2.name).status_code == 200
    refused = httpx.post(f"{cramped.url}/v1/embeddings", json={"model": MINILM.name, "input": ["hi"]}, timeout=300)
    assert refused.status_code == 503
    assert "out_of_memory" in refused.headers["x-inferrelay-attempts"]
    assert f"held by: {SMOLLM2.name} on llamacpp" in refused.json()["error"]["message"]
    assert "pinned" in refused.json()["error"]["message"]
    assert api(cramped, "GET", f"/models/{SMOLLM2.name}").json()["state"] == "loaded"


def test_keep_alive_zero_unloads_after_the_request_and_a_short_one_expires(start_server: Any, home: Path) -> None:
    server = start_server(home)
    assert chat(server, SMOLLM2.name, keep_alive=0).status_code == 200
    view = wait_for_state(server, SMOLLM2.name, "unloaded")
    assert view["events"][-1]["detail"].endswith("keep_alive 0: after its request")

    assert chat(server, SMOLLM2.name, keep_alive="1s").status_code == 200
    view = wait_for_state(server, SMOLLM2.name, "unloaded")
    assert "idle past keep_alive 1s" in view["events"][-1]["detail"]

    assert chat(server, SMOLLM2.name, keep_alive=-1).status_code == 200
    time.sleep(2.5)
    forever = api(server, "GET", f"/models/{SMOLLM2.name}").json()
    assert forever["state"] == "loaded"
    assert forever["loaded"][0]["keep_alive_deadline"] is None


def test_concurrent_first_requests_cause_one_load(start_server: Any, home: Path) -> None:
    server = start_server(home)
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: chat(server, SMOLLM2.name), range(4)))
    assert [a.status_code for a in answers] == [200] * 4
    stats = api(server, "GET", "/stats").json()
    assert stats["loads"] == 1
    assert stats["models"][SMOLLM2.name]["loaded"][0]["requests"] == 4


def test_models_command_against_the_server_and_the_local_registry(start_server: Any, home: Path) -> None:
    import subprocess
    import sys

    env = {**os.environ, "INFERRELAY_HOME": str(home)}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "inferrelay.cli", "models", *args]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)

    local = cli("register", "offline-smol", "my-smol.gguf")
    assert local.returncode == 0, local.stderr
    assert "offline-smol" in cli("list").stdout
    assert cli("register", "bad", "../x.gguf").returncode == 1
    assert cli("load", "offline-smol").returncode == 2, "load needs a server"

    server = start_server(home)
    listed = cli("list", "--url", server.url)
    assert "offline-smol" in listed.stdout, "the server serves what was registered offline"
    loaded = cli("load", "offline-smol", "--url", server.url)
    assert loaded.returncode == 0, loaded.stderr
    assert json.loads(loaded.stdout)["engine"] == "llamacpp"
    assert json.loads(cli("show", "offline-smol", "--url", server.url).stdout)["state"] == "loaded"
    assert json.loads(cli("unload", "offline-smol", "--url", server.url).stdout)["state"] == "unloaded"
