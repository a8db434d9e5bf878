"""The server's /openapi.json says what it really answers: no 422, each error status a route answers documented with
OpenAI's error body, typed answers that the real answers validate against, and text/event-stream for streams."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from tests.conftest import ServerProcess

pytestmark = pytest.mark.slow

CHAT = "smollm2-135m-instruct"
EMBED = "all-minilm-l6-v2"
HELLO = [{"role": "user", "content": "Hello"}]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, test_home: Path) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("openapi")
    home = folder / "home"
    home.mkdir()
    (home / "cache").symlink_to(test_home / "cache", target_is_directory=True)
    process = ServerProcess(home, log=folder / "server.log")
    yield process
    process.stop()


@pytest.fixture(scope="module")
def spec(server: ServerProcess) -> dict[str, Any]:
    response = httpx.get(f"{server.url}/openapi.json", timeout=60)
    assert response.status_code == 200
    return dict(response.json())


def operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            yield method, path, operation


def schema_of(spec: dict[str, Any], method: str, path: str, status: int, media: str = "application/json") -> Any:
    response = spec["paths"][path][method]["responses"].get(str(status))
    assert response is not None, f"{method.upper()} {path} answers {status}, which its description leaves out"
    return response["content"][media]["schema"]


def validate(spec: dict[str, Any], schema: Any, answer: Any) -> None:
    """Against the description itself: its $refs point into its components."""
    jsonschema.validate(answer, {**schema, "components": spec["components"]})


def resolved(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    return dict(spec["components"]["schemas"][ref.rsplit("/", 1)[1]]) if ref else schema


def test_no_422_anywhere_and_every_error_is_openais_body(spec: dict[str, Any]) -> None:
    text = json.dumps(spec)
    assert '"422"' not in text
    assert "HTTPValidationError" not in text
    error = spec["components"]["schemas"]["ErrorDetail"]
    assert {"message", "type", "param", "code"} <= set(error["required"])
    for method, path, operation in operations(spec):
        errors = {status: r for status, r in operation["responses"].items() if status >= "400"}
        assert {"500", "503"} <= set(errors), (method, path)  # 503: also the connection limit, on any route
        assert "text/plain" in errors["503"]["content"], (method, path)
        if "requestBody" in operation:
            assert {"400", "408", "413"} <= set(errors), (method, path)
        if path.startswith(("/v1/", "/api/")):
            assert {"401", "403", "429"} <= set(errors), (method, path)
        for status, response in errors.items():
            json_body = response["content"].get("application/json")
            if path == "/ready" and status == "503":
                assert json_body == {"schema": {"$ref": "#/components/schemas/Readiness"}}  # the reasons, not an error
            elif status != "503" or json_body is not None:
                assert json_body == {"schema": {"$ref": "#/components/schemas/ErrorBody"}}, (method, path, status)


def test_every_answer_is_typed_and_streams_are_event_streams(spec: dict[str, Any]) -> None:
    for method, path, operation in operations(spec):
        success = [r for status, r in operation["responses"].items() if status.startswith("2")]
        assert len(success) == 1, (method, path)
        content = success[0]["content"]
        if path == "/metrics":
            assert list(content) == ["text/plain"]
            continue
        schema = content["application/json"]["schema"]
        for branch in schema.get("anyOf", [schema]):
            shape = resolved(spec, branch)
            assert shape.get("properties"), (method, path, shape)
            assert shape.get("required"), (method, path, shape)
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/responses", "/api/v1/runtime/generate"):
        assert "text/event-stream" in spec["paths"][path]["post"]["responses"]["200"]["content"], path
    assert "text/event-stream" not in spec["paths"]["/v1/embeddings"]["post"]["responses"]["200"]["content"]


ERRORS = [
    ("post", "/v1/chat/completions", {"model": CHAT}, 400),
    ("post", "/v1/chat/completions", {"model": CHAT, "messages": HELLO, "temperature": "hot"}, 400),
    ("post", "/v1/chat/completions", {"model": "no-such-model", "messages": HELLO}, 404),
    ("post", "/v1/completions", {"model": "no-such-model", "prompt": "Hi"}, 404),
    ("post", "/v1/embeddings", {"model": EMBED, "input": 3.5}, 400),
    ("post", "/v1/responses", {"model": CHAT, "input": "Hi", "temperature": 9}, 400),
    ("get", "/v1/models/no-such-model", None, 404),
    ("post", "/api/v1/runtime/models/load", {"name": "no-such-model"}, 404),
    ("post", "/api/v1/runtime/models/unload", {"name": "no-such-model"}, 404),
    ("post", "/api/v1/runtime/models/register", {"name": CHAT, "source": "/nowhere.gguf"}, 409),
    ("post", "/api/v1/runtime/models/register", {"name": "x", "source": "/nowhere.gguf", "engines": ["nope"]}, 400),
    ("get", "/api/v1/runtime/models/no-such-model", None, 404),
    ("get", "/api/v1/runtime/models/no-such-model/doctor", None, 404),
    ("post", "/api/v1/runtime/generate", {"model": CHAT}, 400),
    ("get", "/api/v1/engines/nope", None, 404),
    ("get", "/api/v1/engines?refresh=maybe", None, 400),
    ("delete", "/api/v1/keys/nope", None, 404),
    ("get", "/api/v1/keys/nope/usage", None, 404),
    ("post", "/api/v1/keys", {"name": ""}, 400),
    ("post", "/api/v1/keys", {"name": "big", "tpm": 2**81}, 400),  # found by the fuzzer: a 500 from SQLite
]
NAMES = {"/v1/models/no-such-model": "/v1/models/{model_id}", "no-such-model": "{name}", "nope": "{name}"}
"""The path templates of the description, from the URLs above and below."""


def template(url: str) -> str:
    path = url.split("?")[0].replace(f"/v1/models/{CHAT}", "/v1/models/{model_id}")
    for name, placeholder in [*NAMES.items(), (CHAT, "{name}"), ("llamacpp", "{name}")]:
        path = path.replace(name, placeholder)
    return path


@pytest.mark.parametrize(("method", "url", "body", "status"), ERRORS, ids=lambda v: str(v)[:40])
def test_each_error_a_route_answers_is_documented_with_its_body(
    server: ServerProcess, spec: dict[str, Any], method: str, url: str, body: Any, status: int
) -> None:
    response = httpx.request(method.upper(), f"{server.url}{url}", json=body, timeout=300)
    assert response.status_code == status, response.text
    validate(spec, schema_of(spec, method, template(url), status), response.json())


SUCCESSES = [
    ("get", "/health", None),
    ("get", "/ready", None),
    ("get", "/v1/models", None),
    ("get", f"/v1/models/{CHAT}", None),
    ("post", "/v1/chat/completions", {"model": CHAT, "messages": HELLO, "max_tokens": 4}),
    ("post", "/v1/completions", {"model": CHAT, "prompt": "Hello", "max_tokens": 4}),
    ("post", "/v1/responses", {"model": CHAT, "input": "Hello", "max_output_tokens": 4}),
    ("post", "/api/v1/runtime/generate", {"model": CHAT, "prompt": "Hello", "max_tokens": 4}),
    ("post", "/v1/embeddings", {"model": EMBED, "input": ["Hello", "world"]}),
    ("post", "/v1/embeddings", {"model": EMBED, "input": "Hello", "encoding_format": "base64"}),
    ("get", "/api/v1/runtime/models", None),
    ("get", f"/api/v1/runtime/models/{CHAT}", None),
    ("post", "/api/v1/runtime/models/load", {"name": EMBED}),
    ("get", "/api/v1/runtime/health", None),
    ("get", "/api/v1/runtime/stats", None),
    ("get", "/api/v1/engines", None),
    ("get", "/api/v1/engines/llamacpp", None),
    ("get", "/api/v1/providers", None),
    ("get", "/api/v1/keys", None),
    ("post", "/api/v1/runtime/models/unload", {"name": EMBED}),
]


@pytest.mark.parametrize(("method", "url", "body"), SUCCESSES, ids=lambda v: str(v)[:40])
def test_each_answer_validates_against_its_typed_schema(
    server: ServerProcess, spec: dict[str, Any], method: str, url: str, body: Any
) -> None:
    response = httpx.request(method.upper(), f"{server.url}{url}", json=body, timeout=300)
    assert response.status_code == 200, response.text
    validate(spec, schema_of(spec, method, template(url), 200), response.json())


def test_a_stream_is_served_as_described(server: ServerProcess, spec: dict[str, Any]) -> None:
    body = {"model": CHAT, "messages": HELLO, "max_tokens": 4, "stream": True}
    response = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=300)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    schema = schema_of(spec, "post", "/v1/chat/completions", 200, "text/event-stream")
    events = [{"data": line.removeprefix("data: ")} for line in response.text.split("\n\n") if line]
    assert events[-1] == {"data": "[DONE]"}
    for event in events:
        validate(spec, schema, event)
