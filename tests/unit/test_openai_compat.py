"""What OpenAI's clients expect of the API, in process: models.retrieve, OpenAI's error codes, token-id and
image inputs (refused by local models, passed as sent to remote providers), and usage in remote streams."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from inferrelay.config.mappings import MappingsFile
from inferrelay.config.providers import RemoteProvider
from inferrelay.server.schemas import ChatCompletionRequest, EmbeddingRequest
from inferrelay.server.shapes import usage_in
from inferrelay.server.streams import remote_events
from tests.unit.conftest import EMBED, MakeClient, Upstream, assert_error, spec

IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}}
WITH_IMAGE = [{"role": "user", "content": [{"type": "text", "text": "What is this?"}, IMAGE]}]


def routed(make_client: MakeClient, upstream_url: str) -> TestClient:
    """Local `chat` and `emb`, and remote names (one with a slash) on a provider at `upstream_url`."""
    provider = RemoteProvider(
        type="vllm", base_url=upstream_url, health_interval_s=0, max_retries=0, models=["org/vision-7b", "embed-3"]
    )
    routes = MappingsFile.model_validate(
        {
            "exact_matches": {
                "team/vision": {"provider": "up", "model": "org/vision-7b"},
                "remote-embed": {"provider": "up", "model": "embed-3"},
            }
        }
    )
    models = [spec("chat", ["fake"], context_length=64), spec("emb", ["fake"], EMBED, fake={"dimensions": 8})]
    return make_client(models, providers={"up": provider}, routes=routes)


# 1. GET /v1/models/{id}


def test_every_listed_model_is_retrieved_by_its_id_slashes_included(make_client: MakeClient) -> None:
    client = routed(make_client, "http://127.0.0.1:9/v1")  # never asked: listing reads the configuration only
    listed = client.get("/v1/models").json()["data"]
    assert {m["id"] for m in listed} >= {"chat", "emb", "team/vision", "org/vision-7b"}
    for entry in listed:
        assert client.get(f"/v1/models/{entry['id']}").json() == entry
    escaped = client.get("/v1/models/team%2Fvision")  # the official client sends the slash escaped
    assert escaped.status_code == 200
    assert escaped.json()["id"] == "team/vision"
    chat = client.get("/v1/models/chat").json()
    assert chat["object"] == "model"
    assert (chat["owned_by"], chat["capabilities"]) == ("inferrelay", ["chat", "completion"])


@pytest.mark.parametrize("name", ["nope", "team/nope", "chat/extra"])
def test_retrieving_an_unknown_model_is_openais_404(make_client: MakeClient, name: str) -> None:
    client = routed(make_client, "http://127.0.0.1:9/v1")
    error = assert_error(client.get(f"/v1/models/{name}"), 404, "model_not_found", "model")
    assert error["message"] == f"The model {name!r} does not exist."


# 2. context_length_exceeded


def test_context_overflow_is_openais_code_and_the_kind_stays_context_length(make_client: MakeClient) -> None:
    client = make_client([spec("m", ["fake"], context_length=4)])
    long = {"model": "m", "messages": [{"role": "user", "content": "one two three four five"}]}
    error = assert_error(client.post("/v1/chat/completions", json=long), 400, "context_length_exceeded", "messages")
    assert error["type"] == "invalid_request_error"
    metrics = client.get("/metrics").text
    assert 'outcome="context_length"' in metrics, "metrics, logs and attempts keep the kind's own name"


# 3. embeddings input as token ids


@pytest.mark.parametrize("ids", [[1, 2, 3], [[1, 2], [3]]])
def test_token_ids_are_refused_by_a_local_model_with_the_langchain_fix(client: TestClient, ids: Any) -> None:
    error = assert_error(
        client.post("/v1/embeddings", json={"model": "emb", "input": ids}), 400, "unsupported", "input"
    )
    assert "embeds text only" in error["message"]
    assert "check_embedding_ctx_length=False" in error["message"]


def test_token_ids_go_to_a_remote_provider_as_sent(make_client: MakeClient, upstream: Upstream) -> None:
    client = routed(make_client, upstream.url)
    response = client.post("/v1/embeddings", json={"model": "remote-embed", "input": [[101, 7592, 102]]})
    assert response.status_code == 200, response.text
    assert upstream.bodies == [{"model": "embed-3", "input": [[101, 7592, 102]]}]


# 4. image content parts


def test_an_image_part_is_refused_by_a_local_model_naming_the_part(client: TestClient) -> None:
    body = {"model": "chat", "messages": [{"role": "system", "content": "Be brief."}, *WITH_IMAGE]}
    error = assert_error(client.post("/v1/chat/completions", json=body), 400, "unsupported", "messages.1.content.1")
    assert "messages.1.content.1: model 'chat' takes text only" in error["message"]
    assert "'image_url'" in error["message"]
    streamed = client.post("/v1/chat/completions", json=body | {"stream": True})
    assert_error(streamed, 400, "unsupported", "messages.1.content.1")


def test_an_image_part_goes_to_a_remote_provider_as_sent(make_client: MakeClient, upstream: Upstream) -> None:
    client = routed(make_client, upstream.url)
    response = client.post("/v1/chat/completions", json={"model": "team/vision", "messages": WITH_IMAGE})
    assert response.status_code == 200, response.text
    assert response.json()["model"] == "team/vision"
    assert upstream.bodies == [{"model": "org/vision-7b", "messages": WITH_IMAGE}]


def test_text_parts_still_serve_locally(client: TestClient) -> None:
    parts = [{"type": "text", "text": "hello "}, {"type": "text", "text": "there"}]
    response = client.post(
        "/v1/chat/completions", json={"model": "chat", "messages": [{"role": "user", "content": parts}]}
    )
    assert response.status_code == 200, response.text


def test_forwarded_bodies_keep_what_the_caller_sent() -> None:
    chat = ChatCompletionRequest.model_validate({"model": "m", "messages": WITH_IMAGE})
    assert chat.forwarded()["messages"] == WITH_IMAGE
    embed = EmbeddingRequest.model_validate({"model": "m", "input": "one string"})
    assert embed.forwarded()["input"] == "one string"
    assert embed.texts == ["one string"]


# 5. usage in a remote stream, however its JSON is spaced

COMPACT = 'data: {"id":"c","choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10}}\n\n'
SPACED = (
    'data: {"id": "c", "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}}\n\n'
)
USAGE = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}


@pytest.mark.parametrize("event", [COMPACT, SPACED, SPACED.replace("data: ", "data:")])
def test_usage_is_read_from_compact_and_spaced_json(event: str) -> None:
    assert usage_in(event) == USAGE


@pytest.mark.parametrize(
    "event",
    [
        'data: {"choices":[{"delta":{"content":"hi"}}],"usage":null}\n\n',  # vLLM's chunks before the last
        'data: {"choices":[{"delta":{"content":"the \\"usage\\":{ key"}}]}\n\n',  # the words, in the text
        'data: {"choices":[]}\n\n',
        'data: not json with "usage"\n\n',
        'data: ["usage"]\n\n',
    ],
)
def test_events_without_a_usage_object_count_nothing(event: str) -> None:
    assert usage_in(event) is None


def test_a_remote_stream_counts_its_usage_chunk_and_passes_every_event_through() -> None:
    chunk = 'data: {"choices":[{"index":0,"delta":{"content":"Paris"}}],"usage":null}\n\n'
    counted: list[dict[str, Any]] = []

    async def rest() -> AsyncIterator[str]:
        for event in (chunk, COMPACT):
            yield event

    async def run() -> list[str]:
        return [event async for event in remote_events(chunk, rest(), counted.append)]

    assert asyncio.run(run()) == [chunk, chunk, COMPACT]
    assert counted == [USAGE]
