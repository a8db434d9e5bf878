"""The door (server/door.py, server/body_limit.py): limits and invalid text refused before validation or a model."""

from __future__ import annotations

import json
from typing import Any

import pytest

from inferrelay.config.limits import RequestLimits
from inferrelay.errors import InferrelayError
from inferrelay.server.door import check_body
from tests.unit.conftest import MakeClient, assert_error, spec

MODEL = "m"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
SMALL = {"max_body_bytes": 4096, "max_text_chars": 1000, "max_messages": 3, "max_inputs": 3, "max_input_chars": 50}


def client(make_client: MakeClient) -> Any:
    models = [spec(MODEL, ["fake"]), spec("e", ["fake"], ["embeddings"])]
    return make_client(models, runtime={"limits": SMALL})


def raw(body: str) -> dict[str, Any]:
    return {"content": body.encode("utf-8", "surrogatepass"), "headers": {"content-type": "application/json"}}


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/chat/completions", '{"model": "m", "messages": [{"role": "user", "content": "a\\ud800b"}]}',
         "messages.0.content"),
        ("/v1/completions", '{"model": "m", "prompt": "\\udfff"}', "prompt"),
        ("/v1/embeddings", '{"model": "e", "input": ["ok", "x\\ud83d"]}', "input.1"),
        ("/v1/chat/completions", '{"model": "m", "messages": [], "\\ud800": 1}', "\\ud800"),
        ("/api/v1/runtime/models/load", '{"name": "\\ud800"}', "name"),
    ],
)  # fmt: skip
def test_lone_surrogates_are_a_400_naming_the_field(make_client: MakeClient, path: str, body: str, param: str) -> None:
    answer = client(make_client).post(path, **raw(body))
    assert_error(answer, 400, "invalid_unicode", param)


def test_raw_surrogate_bytes_are_refused_as_escapes_are(make_client: MakeClient) -> None:
    body = '{"model": "m", "prompt": "\ud800"}'  # the three bytes ED A0 80, which json.loads takes as a surrogate
    assert_error(client(make_client).post("/v1/completions", **raw(body)), 400, "invalid_unicode", "prompt")


def test_surrogate_pairs_are_text(make_client: MakeClient) -> None:
    body = '{"model": "m", "messages": [{"role": "user", "content": "\\ud83d\\ude00"}], "max_tokens": 4}'
    assert client(make_client).post("/v1/chat/completions", **raw(body)).status_code == 200


@pytest.mark.parametrize(
    ("path", "change", "code", "param"),
    [
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "a"}] * 4}, "array_above_max_length",
         "messages"),
        ("/v1/chat/completions", {"stop": ["a", "b", "c", "d", "e"]}, "array_above_max_length", "stop"),
        ("/v1/chat/completions", {"stop": ["ok", "s" * 257]}, "string_above_max_length", "stop.1"),
        ("/v1/completions", {"prompt": "p", "messages": None, "stop": "s" * 257}, "string_above_max_length", "stop"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "a" * 1001}]}, "request_too_large", None),
        ("/v1/embeddings", {"model": "e", "input": ["a"] * 4, "messages": None}, "array_above_max_length", "input"),
        ("/v1/embeddings", {"model": "e", "input": ["a", "b" * 51], "messages": None}, "string_above_max_length",
         "input.1"),
        ("/v1/embeddings", {"model": "e", "input": "b" * 51, "messages": None}, "string_above_max_length", "input"),
        ("/v1/responses", {"input": [{"role": "user", "content": "a"}] * 4, "messages": None},
         "array_above_max_length", "input"),
    ],
)  # fmt: skip
def test_limits_are_a_400_naming_the_field(
    make_client: MakeClient, path: str, change: dict[str, Any], code: str, param: str | None
) -> None:
    body = {key: value for key, value in (CHAT | change).items() if value is not None}
    assert_error(client(make_client).post(path, json=body), 400, code, param)


def test_a_body_past_the_limit_is_a_413_whether_declared_or_chunked(make_client: MakeClient) -> None:
    served = client(make_client)
    big = json.dumps(CHAT | {"padding": "x" * 5000}).encode()
    assert_error(served.post("/v1/chat/completions", content=big, headers=raw("")["headers"]), 413,
                 "request_too_large")  # fmt: skip

    def chunks() -> Any:
        yield from (big[i : i + 1000] for i in range(0, len(big), 1000))

    answer = served.post("/v1/chat/completions", content=chunks(), headers=raw("")["headers"])
    assert "content-length" not in answer.request.headers
    assert_error(answer, 413, "request_too_large")
    assert served.post("/v1/chat/completions", json=CHAT).status_code == 200  # the next request is served


def test_the_defaults_take_what_openai_takes() -> None:
    limits = RequestLimits()
    assert (limits.max_body_bytes, limits.max_messages, limits.max_stop, limits.max_inputs) == (2**25, 2048, 4, 2048)
    check_body({"input": ["a"] * 2048, "stop": ["s" * 256] * 4, "messages": [{}] * 2048}, limits)
    with pytest.raises(InferrelayError):
        check_body({"input": ["a"] * 2049}, limits)


def test_a_configured_limit_is_read_from_the_runtime_block() -> None:
    from inferrelay.config.runtime import RuntimeSettings

    runtime = RuntimeSettings.model_validate({"limits": {"max_body_bytes": "1MiB", "max_stop": 8}})
    assert (runtime.limits.max_body_bytes, runtime.limits.max_stop) == (2**20, 8)
    with pytest.raises(ValueError, match="extra"):
        RuntimeSettings.model_validate({"limits": {"max_bodies": 1}})
