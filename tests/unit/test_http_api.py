"""The OpenAI routes over the fake engine: bad input is a 4xx with a named field, answers are OpenAI-shaped."""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
import pytest

from tests.unit.conftest import assert_error

USER = [{"role": "user", "content": "hello brave world"}]


def chat_body(**extra: Any) -> dict[str, Any]:
    return {"model": "chat", "messages": USER, **extra}


def events(text: str) -> list[Any]:
    """Parse an SSE body: every event is one `data:` line; `[DONE]` is kept as a string."""
    blocks = [b for b in text.split("\n\n") if b.strip()]
    parsed: list[Any] = []
    for block in blocks:
        assert block.startswith("data: "), block
        data = block[len("data: ") :]
        parsed.append(data if data == "[DONE]" else json.loads(data))
    return parsed


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"model": "chat", ', "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('"hello"', "must be a JSON object"),
        ("null", "must be a JSON object"),
    ],
)
def test_unreadable_bodies(client: Any, content: str, message: str) -> None:
    response = client.post("/v1/chat/completions", content=content, headers={"content-type": "application/json"})
    error = assert_error(response, 400, "bad_request")
    assert message in error["message"]
    assert error["param"] is None


@pytest.mark.parametrize(
    ("body", "param", "message"),
    [
        ({"model": "chat"}, "messages", "required"),
        ({"messages": USER}, "model", "required"),
        (chat_body(messages=[]), "messages", None),
        (chat_body(temperature="hot"), "temperature", None),
        (chat_body(temperature=3), "temperature", None),
        (chat_body(max_tokens=-1), "max_tokens", None),
        (chat_body(max_tokens=0), "max_tokens", None),
        (chat_body(top_p=0), "top_p", None),
        (chat_body(messages=[{"role": "user", "content": "hi", "tool_calls": []}]), "messages.0.tool_calls", "assistant"),  # noqa: E501
        (chat_body(messages=[{"role": "tool", "content": "42"}]), "messages.0.tool_call_id", "tool_call_id"),
        (chat_body(frequency_penalty=-3), "frequency_penalty", "between -2 and 2"),
        (chat_body(n=0), "n", None),
        (chat_body(top_logprobs=21), "top_logprobs", None),
        (chat_body(response_format={"type": "json_schema"}), "response_format", "json_schema"),
        (chat_body(response_format={"type": "yaml"}), "response_format.type", None),
        (chat_body(messages=[{"role": "user", "content": [{"type": "text"}]}]), "messages.0.content", "text part"),
        (chat_body(messages=[{"role": "user", "content": [{"text": "hi"}]}]), "messages.0.content", "'type'"),
        (chat_body(stop=5), "stop", None),
        (chat_body(messages=[{"role": "user", "content": 5}]), "messages.0.content", None),
        (chat_body(messages=[{"role": "wizard", "content": "hi"}]), "messages.0.role", None),
        (chat_body(messages=[{"role": "user"}]), "messages.0.content", "required"),
        (chat_body(model=""), "model", None),
    ],
)
def test_bad_chat_requests_name_the_field(client: Any, body: dict[str, Any], param: str, message: str | None) -> None:
    error = assert_error(client.post("/v1/chat/completions", json=body), 400, "bad_request", param)
    assert error["message"].startswith(f"{param}: ")
    if message:
        assert message in error["message"]


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 2, "stream": True}, "n"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "required"}, "tools"),
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 2}, "logprobs"),
        ({"logit_bias": {"1": 5}}, "logit_bias"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"function_call": "auto"}, "function_call"),
        ({"frequency_penalty": -1}, "frequency_penalty"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"prompt": "a", "echo": True}, "echo"),
        ({"prompt": "a", "suffix": "z"}, "suffix"),
        ({"prompt": "a", "best_of": 2}, "best_of"),
        ({"frobnicate": True}, "frobnicate"),
        ({"prompt": "a", "messages": USER}, "messages"),
    ],
)
def test_what_no_step_can_honour_is_a_400_naming_the_parameter_and_the_steps(
    client: Any, extra: dict[str, Any], param: str
) -> None:
    """Valid OpenAI parameters the fake engine cannot honour: skipped as unsupported, then a 400 (no remote step)."""
    if "prompt" in extra:
        response = client.post("/v1/completions", json={"model": "chat", **extra})
    else:
        response = client.post("/v1/chat/completions", json=chat_body(**extra))
    error = assert_error(response, 400, "unsupported", param)
    assert f"local/fake cannot honour {param}" in error["message"]
    assert error["message"].startswith("no backend for model 'chat' can honour this request")


@pytest.mark.parametrize(
    ("body", "param", "message"),
    [
        ({"model": "emb", "input": []}, "input", "empty list"),
        ({"model": "emb", "input": ""}, "input", "empty string"),
        ({"model": "emb", "input": ["ok", ""]}, "input", "empty string"),
        ({"model": "emb", "input": ["a", 1]}, "input", "token ids (lists of integers)"),
        ({"model": "emb", "input": [[1], []]}, "input", "token ids (lists of integers)"),
        ({"model": "emb", "input": 5}, "input", "a string or a list of strings"),
        ({"model": "emb", "input": "x", "dimensions": 4}, "dimensions", "not supported"),
        ({"model": "emb", "input": "x", "encoding_format": "int8"}, "encoding_format", None),
        ({"model": "emb"}, "input", "required"),
    ],
)
def test_bad_embedding_requests_name_the_field(
    client: Any, body: dict[str, Any], param: str, message: str | None
) -> None:
    error = assert_error(client.post("/v1/embeddings", json=body), 400, "bad_request", param)
    if message:
        assert message in error["message"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "chat", "prompt": ["a", "b"]}, "prompt"),
        ({"model": "chat", "prompt": []}, "prompt"),
    ],
)
def test_bad_completion_requests_name_the_field(client: Any, body: dict[str, Any], param: str) -> None:
    assert_error(client.post("/v1/completions", json=body), 400, "bad_request", param)


def test_unknown_model_is_404(client: Any) -> None:
    error = assert_error(
        client.post("/v1/chat/completions", json=chat_body(model="gpt-9")), 404, "model_not_found", "model"
    )
    assert "gpt-9" in error["message"]
    assert_error(client.post("/v1/embeddings", json={"model": "gpt-9", "input": "x"}), 404, "model_not_found", "model")


def test_chat_to_an_embedding_model_is_400(client: Any) -> None:
    error = assert_error(client.post("/v1/chat/completions", json=chat_body(model="emb")), 400, "bad_request", "model")
    assert "embeddings" in error["message"]


def test_embeddings_from_a_chat_model_is_400(client: Any) -> None:
    assert_error(client.post("/v1/embeddings", json={"model": "chat", "input": "x"}), 400, "bad_request", "model")


def test_budget_past_the_context_is_400(client: Any) -> None:
    response = client.post("/v1/chat/completions", json=chat_body(max_tokens=62))  # 3 prompt tokens of 64
    assert_error(response, 400, "context_length_exceeded", "max_tokens")
    assert client.post("/v1/chat/completions", json=chat_body(max_tokens=61)).status_code == 200


def test_embedding_input_past_the_context_is_cut_or_refused_when_asked(client: Any) -> None:
    long = "w " * 17  # past the fake model's window of 16
    cut = client.post("/v1/embeddings", json={"model": "emb", "input": ["ok", long]})
    assert cut.status_code == 200, cut.text
    first = " ".join(["w"] * 16)
    window = client.post("/v1/embeddings", json={"model": "emb", "input": first}).json()["data"][0]["embedding"]
    assert cut.json()["data"][1]["embedding"] == window  # the input's first window, as sentence-transformers cuts
    refused = client.post("/v1/embeddings", json={"model": "emb", "input": ["ok", long], "truncate": False})
    assert_error(refused, 400, "context_length_exceeded", "input")


def test_unknown_route_and_method_are_not_500(client: Any) -> None:
    for response, status in ((client.get("/v1/nothing"), 404), (client.get("/v1/chat/completions"), 405)):
        assert response.status_code == status
        assert {"message", "type", "param", "code"} <= set(response.json()["error"])


# --- answers -----------------------------------------------------------------------------------


def test_chat_answer_shape(client: Any) -> None:
    response = client.post("/v1/chat/completions", json=chat_body())
    assert response.status_code == 200
    assert response.headers["x-inferrelay-backend"] == "local/fake"
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == "chat"
    assert body["id"].startswith("chatcmpl-")
    assert body["choices"] == [
        {"index": 0, "message": {"role": "assistant", "content": "echo: hello brave world"}, "finish_reason": "stop"}
    ]
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


def test_chat_length_and_stop(client: Any) -> None:
    short = client.post("/v1/chat/completions", json=chat_body(max_tokens=2)).json()
    assert short["choices"][0]["message"]["content"] == "echo: hello"
    assert short["choices"][0]["finish_reason"] == "length"
    newer = client.post("/v1/chat/completions", json=chat_body(max_completion_tokens=1, max_tokens=9)).json()
    assert newer["usage"]["completion_tokens"] == 1
    stopped = client.post("/v1/chat/completions", json=chat_body(stop="brave")).json()
    assert stopped["choices"][0]["message"]["content"] == "echo: hello "
    assert stopped["choices"][0]["finish_reason"] == "stop"


def test_chat_accepts_content_parts_and_null_unsupported(client: Any) -> None:
    parts = [{"role": "developer", "content": [{"type": "text", "text": "a "}, {"type": "text", "text": "b"}]}]
    response = client.post("/v1/chat/completions", json=chat_body(messages=parts, tools=None, logprobs=False))
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "echo: a b"


def test_completion_answer_shape(client: Any) -> None:
    for prompt in ("one two", ["one two"]):
        body = client.post("/v1/completions", json={"model": "chat", "prompt": prompt}).json()
        assert body["object"] == "text_completion"
        assert body["choices"] == [{"index": 0, "text": "echo: one two", "logprobs": None, "finish_reason": "stop"}]
        assert body["usage"]["prompt_tokens"] == 2


def test_embeddings_answer_shape(client: Any) -> None:
    response = client.post("/v1/embeddings", json={"model": "emb", "input": ["a b", "c", "a b"]})
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "list"
    assert [d["index"] for d in body["data"]] == [0, 1, 2]
    vectors = np.array([d["embedding"] for d in body["data"]])
    assert vectors.shape == (3, 8)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(vectors[0], vectors[2])
    assert body["usage"] == {"prompt_tokens": 5, "total_tokens": 5}


def test_many_inputs_keep_their_order(client: Any) -> None:
    texts = [" ".join(["w"] * (1 + (i * 5) % 9)) + f" n{i}" for i in range(70)]  # > one batch of 32
    together = client.post("/v1/embeddings", json={"model": "emb", "input": texts}).json()["data"]
    for text in (texts[0], texts[33], texts[69]):
        alone = client.post("/v1/embeddings", json={"model": "emb", "input": text}).json()["data"][0]["embedding"]
        assert together[texts.index(text)]["embedding"] == alone


def test_base64_is_the_same_float32_vector(client: Any) -> None:
    texts = ["the cat sat", "on the mat"]
    floats = client.post("/v1/embeddings", json={"model": "emb", "input": texts}).json()
    encoded = client.post("/v1/embeddings", json={"model": "emb", "input": texts, "encoding_format": "base64"}).json()
    for plain, packed in zip(floats["data"], encoded["data"], strict=True):
        assert isinstance(packed["embedding"], str)
        decoded = np.frombuffer(base64.b64decode(packed["embedding"]), dtype="<f4")
        np.testing.assert_array_equal(decoded, np.array(plain["embedding"], dtype=np.float32))


def test_models_and_health(client: Any) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    models = client.get("/v1/models").json()
    assert models["object"] == "list"
    assert {m["id"]: m["capabilities"] for m in models["data"]} == {
        "chat": ["chat", "completion"],
        "emb": ["embeddings"],
    }
    assert all(m["engines"] == ["fake"] for m in models["data"])


# --- streaming ---------------------------------------------------------------------------------


def test_chat_stream_events(client: Any) -> None:
    response = client.post("/v1/chat/completions", json=chat_body(stream=True))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-inferrelay-backend"] == "local/fake"
    parsed = events(response.text)
    assert parsed[-1] == "[DONE]"
    chunks = parsed[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant"}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == "echo: hello brave world"
    assert [c["choices"][0]["finish_reason"] for c in chunks][-1] == "stop"
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
    assert not any("usage" in c for c in chunks)


def test_chat_stream_include_usage(client: Any) -> None:
    body = chat_body(stream=True, stream_options={"include_usage": True}, max_tokens=2)
    chunks = events(client.post("/v1/chat/completions", json=body).text)
    assert chunks[-1] == "[DONE]"
    usage_chunk = chunks[-2]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    assert chunks[-3]["choices"][0]["finish_reason"] == "length"


def test_chat_stream_with_stop(client: Any) -> None:
    chunks = events(client.post("/v1/chat/completions", json=chat_body(stream=True, stop=["o b"])).text)[:-1]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == "echo: hell"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_completion_stream_events(client: Any) -> None:
    body = {"model": "chat", "prompt": "one two", "stream": True, "stream_options": {"include_usage": True}}
    parsed = events(client.post("/v1/completions", json=body).text)
    assert parsed[-1] == "[DONE]"
    chunks = parsed[:-1]
    assert all(c["object"] == "text_completion" for c in chunks)
    text = "".join(c["choices"][0]["text"] for c in chunks if c["choices"])
    assert text == "echo: one two"
    assert chunks[-1]["usage"]["completion_tokens"] == 3
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"


def test_stream_validation_errors_are_json(client: Any) -> None:
    response = client.post("/v1/chat/completions", json=chat_body(stream=True, n=0))
    assert_error(response, 400, "bad_request", "n")


@pytest.mark.parametrize(
    ("route", "field"),
    [
        ("/v1/chat/completions", "temperature"),
        ("/v1/chat/completions", "top_p"),
        ("/v1/chat/completions", "n"),
        ("/v1/chat/completions", "stream"),
        ("/v1/chat/completions", "presence_penalty"),
        ("/v1/chat/completions", "frequency_penalty"),
        ("/v1/completions", "echo"),
    ],
)
def test_null_optional_parameters_mean_the_default(client: Any, route: str, field: str) -> None:
    body = chat_body() if route == "/v1/chat/completions" else {"model": "chat", "prompt": "one two"}
    response = client.post(route, json={**body, field: None})
    assert response.status_code == 200, response.text


def test_a_body_sent_without_json_content_type_is_told_so(client: Any) -> None:
    response = client.post("/v1/chat/completions", content=b'{"model": "chat"}', headers={"content-type": "text/plain"})
    assert_error(response, 400, "bad_request", None)
    assert "content-type: application/json" in response.json()["error"]["message"]


def test_unknown_route_is_not_found(client: Any) -> None:
    response = client.get("/v1/no-such-route")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("seed", [2**63, -(2**63) - 1])
def test_seed_outside_int64_is_refused(client: Any, seed: int) -> None:
    assert_error(client.post("/v1/chat/completions", json=chat_body(seed=seed)), 400, "bad_request", "seed")


def test_stream_options_without_stream_is_refused(client: Any) -> None:
    response = client.post("/v1/chat/completions", json=chat_body(stream_options={"include_usage": True}))
    assert_error(response, 400, "bad_request")
    assert "stream_options" in response.json()["error"]["message"]
