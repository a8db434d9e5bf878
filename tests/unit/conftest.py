"""Shared pieces for the unit tests: fake engines under any name and an in-process app.

Nothing here loads a real model; every engine is `FakeEngine` or a subclass of it.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from inferrelay.config.schema import ModelSpec, Settings
from inferrelay.engines.base import Engine, LoadedModel, ProbeResult
from inferrelay.engines.fake import FakeEngine
from inferrelay.engines.registry import EngineRegistry
from inferrelay.errors import InferrelayError
from inferrelay.server.app import create_app

os.environ.setdefault("HF_HUB_OFFLINE", "1")

CHAT = ["chat", "completion"]
EMBED = ["embeddings"]


class NamedFake(FakeEngine):
    """A FakeEngine registered as `name`, reading its options from `engine_options[name]`.

    FakeEngine reads `engine_options["fake"]`; this one hands its own entry over under
    that key, so two fakes in one chain can be given different faults. It counts loads.
    """

    def __init__(self, name: str = "fake") -> None:
        self.name = name  # type: ignore[misc]
        self.loads = 0

    def load(self, model: ModelSpec, device: str, home: Path) -> LoadedModel:
        self.loads += 1
        options = model.engine_options.get(self.name, {})
        return super().load(model.model_copy(update={"engine_options": {"fake": options}}), device, home)


class UnavailableFake(NamedFake):
    """A fake whose probe says it cannot run here, for the given reason and error."""

    def __init__(self, name: str, reason: str, error: InferrelayError | None = None) -> None:
        super().__init__(name)
        self._reason = reason
        self._error = error

    def probe(self) -> ProbeResult:
        return ProbeResult(False, self._reason, error=self._error)


class CrashingFake(NamedFake):
    """A fake whose load raises a foreign (unclassified) exception."""

    def __init__(self, name: str, exc: Exception) -> None:
        super().__init__(name)
        self._exc = exc

    def load(self, model: ModelSpec, device: str, home: Path) -> LoadedModel:
        self.loads += 1
        raise self._exc


def spec(
    name: str,
    engines: list[str],
    capabilities: list[str] | None = None,
    *,
    context_length: int = 256,
    **engine_options: dict[str, Any],
) -> ModelSpec:
    return ModelSpec.model_validate(
        {
            "name": name,
            "source": "unused-by-the-fake-engine",
            "capabilities": capabilities or CHAT,
            "engines": engines,
            "context_length": context_length,
            "engine_options": engine_options,
        }
    )


def assert_error(response: Any, status: int, code: str, param: str | None = None) -> dict[str, Any]:
    """An OpenAI-shaped error body with this status and code; returns `error`."""
    assert response.status_code == status, response.text
    assert response.status_code != 500
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert {"message", "type", "param", "code"} <= set(error)
    assert isinstance(error["message"], str)
    assert error["message"]
    assert error["code"] == code
    if status >= 500:
        assert error["type"] == "server_error"
    elif status != 429:
        assert error["type"] == "invalid_request_error"
    if param is not None:
        assert error["param"] == param
    return error


MakeClient = Callable[..., TestClient]


@pytest.fixture
def make_client(tmp_path: Path) -> Iterator[MakeClient]:
    """Build an app over the given models and engines; each client is closed (lifespan ends) after the test."""
    with ExitStack() as stack:

        def make(
            models: list[ModelSpec], engines: dict[str, Engine | Exception] | None = None, **settings: Any
        ) -> TestClient:
            registry = EngineRegistry(engines if engines is not None else {"fake": NamedFake("fake")})
            app = create_app(Settings(models=models, home=tmp_path / "home", **settings), registry)
            return stack.enter_context(TestClient(app))

        yield make


@pytest.fixture
def client(make_client: MakeClient) -> TestClient:
    """A chat/completion model `chat` and an 8-dimension embedding model `emb`, both on the fake engine."""
    return make_client(
        [
            spec("chat", ["fake"], context_length=64),
            spec("emb", ["fake"], EMBED, context_length=16, fake={"dimensions": 8}),
        ]
    )


class Upstream(ThreadingHTTPServer):
    """A real HTTP server on 127.0.0.1 that answers every POST with an OpenAI shape and keeps the bodies."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Recorder)
        self.bodies: list[dict[str, Any]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _Recorder(BaseHTTPRequestHandler):
    server: Upstream

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        self.server.bodies.append(body)
        if self.path.endswith("/embeddings"):
            answer: dict[str, Any] = {
                "object": "list",
                "data": [{"object": "embedding", "index": 0, "embedding": [1.0]}],
            }
        else:
            message = {"role": "assistant", "content": "a picture"}
            answer = {
                "object": "chat.completion",
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            }
        data = json.dumps(answer | {"model": body["model"]}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
