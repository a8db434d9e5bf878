"""A real `inferrelay serve` process and the official openai client, as a user would run them."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest

from tests.conftest import FRANCE
from tests.references import llama_cpp_chat, llama_cpp_completion

pytestmark = pytest.mark.slow

CHAT = "smollm2-135m-instruct"
EMBED = "all-minilm-l6-v2"


@pytest.fixture(scope="module")
def server(test_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from tests.conftest import ServerProcess

    process = ServerProcess(test_home, log=tmp_path_factory.mktemp("logs") / "server.log")
    yield process
    process.stop()


@pytest.fixture(scope="module")
def client(server: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def test_models_are_listed(client: openai.OpenAI) -> None:
    assert {m.id for m in client.models.list()} == {CHAT, EMBED}


def test_chat_answers_with_real_usage_and_backend_headers(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model=CHAT, messages=FRANCE, temperature=0, max_tokens=40)
    answer = raw.parse()
    assert raw.headers["x-inferrelay-backend"] == "local/llamacpp"
    assert raw.headers["x-inferrelay-attempts"] == ""
    expected = llama_cpp_chat(FRANCE, 40)
    assert answer.choices[0].message.content == expected.text, "llama-cpp-python's own greedy answer"
    assert answer.choices[0].finish_reason == expected.finish_reason
    assert answer.usage is not None
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (
        expected.prompt_tokens,
        expected.completion_tokens,
    )
    assert answer.usage.prompt_tokens > 10
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens


def test_chat_streams_server_sent_events(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=CHAT, messages=FRANCE, temperature=0, max_tokens=40, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    expected = llama_cpp_chat(FRANCE, 40)
    assert text == expected.text
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [expected.finish_reason]
    whole = client.chat.completions.create(model=CHAT, messages=FRANCE, temperature=0, max_tokens=40)
    assert text == whole.choices[0].message.content, "streamed or not, greedy gives one answer"
    assert chunks[-1].usage is not None
    assert whole.usage is not None
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_raw_stream_ends_with_done(server: Any) -> None:
    body = {"model": CHAT, "messages": FRANCE, "temperature": 0, "max_tokens": 8, "stream": True}
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, timeout=60) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"


def test_completion(client: openai.OpenAI) -> None:
    answer = client.completions.create(model=CHAT, prompt="The capital of France is", max_tokens=5, temperature=0)
    expected = llama_cpp_completion("The capital of France is", 5)
    assert answer.choices[0].text == expected.text, "llama-cpp-python's own greedy completion"
    assert answer.choices[0].finish_reason == expected.finish_reason
    assert answer.usage is not None
    assert answer.usage.completion_tokens == expected.completion_tokens <= 5


def test_embeddings_float_and_base64(client: openai.OpenAI, server: Any) -> None:
    texts = ["The cat sits on the mat.", "Paris is the capital of France."]
    floats = client.embeddings.create(model=EMBED, input=texts, encoding_format="float")
    assert [d.index for d in floats.data] == [0, 1]
    assert len(floats.data[0].embedding) == 384
    assert floats.usage.prompt_tokens > 6
    raw = httpx.post(
        f"{server.url}/v1/embeddings", json={"model": EMBED, "input": texts[0], "encoding_format": "base64"}
    )
    assert raw.headers["x-inferrelay-backend"] == "local/onnx"
    decoded = np.frombuffer(base64.b64decode(raw.json()["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(decoded, floats.data[0].embedding, atol=1e-6)
    single = client.embeddings.create(model=EMBED, input=texts[1])  # the client's default is base64
    assert np.allclose(single.data[0].embedding, floats.data[1].embedding, atol=1e-6)


@pytest.mark.parametrize(
    ("request_body", "status", "param"),
    [
        ({"model": "no-such-model", "messages": FRANCE}, 404, "model"),
        ({"model": CHAT, "messages": []}, 400, "messages"),
        ({"model": CHAT, "messages": FRANCE, "n": 200}, 400, "n"),
        ({"model": CHAT, "messages": FRANCE, "max_tokens": -5}, 400, "max_tokens"),
        ({"model": CHAT, "messages": [{"role": "user", "content": "word " * 4000}]}, 400, "messages"),
        ({"model": CHAT, "messages": FRANCE, "max_tokens": 5000}, 400, "max_tokens"),
        ({"model": CHAT, "messages": FRANCE, "temperature": "warm"}, 400, "temperature"),
        ({"model": CHAT, "messages": FRANCE, "tools": [{"type": "function"}]}, 400, "tools"),
        ({"model": CHAT}, 400, "messages"),
    ],
)
def test_bad_chat_requests_get_openai_errors(
    client: openai.OpenAI, request_body: dict[str, Any], status: int, param: str
) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        client.post("/chat/completions", body=request_body, cast_to=object)
    assert caught.value.status_code == status
    error = caught.value.body
    assert isinstance(error, dict)
    assert error["param"] == param
    assert param in error["message"] or "context length" in error["message"] or "does not exist" in error["message"]


def test_bad_embedding_requests(client: openai.OpenAI) -> None:
    for body, param in (
        ({"model": EMBED, "input": []}, "input"),
        ({"model": EMBED, "input": ""}, "input"),
        ({"model": EMBED, "input": "long " * 400, "truncate": False}, "input"),  # cut by default
        ({"model": CHAT, "input": "x"}, "model"),
    ):
        with pytest.raises(openai.BadRequestError) as caught:
            client.post("/embeddings", body=body, cast_to=object)
        assert caught.value.body["param"] == param  # type: ignore[index]


def test_malformed_json_is_a_400(server: Any) -> None:
    response = httpx.post(
        f"{server.url}/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["error"]["message"]
