"""The official openai client against a real server: what it expects beyond chat (models.retrieve, OpenAI's
error codes) and the inputs LangChain and vision clients send (token ids, image parts)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.conftest import FRANCE, ServerProcess, free_port

pytestmark = pytest.mark.slow

CHAT = "smollm2-135m-instruct"
EMBED = "all-minilm-l6-v2"


@pytest.fixture(scope="module")
def server(test_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    config = tmp_path_factory.mktemp("config")
    (config / "providers.yaml").write_text(
        "providers:\n"
        "  up:\n"
        "    type: vllm\n"
        f"    base_url: http://127.0.0.1:{free_port()}/v1\n"  # never asked here: listing reads the configuration
        "    health_interval_s: 0\n"
        "    models: [org/remote-7b]\n"
    )
    (config / "model-mappings.yaml").write_text("exact_matches:\n  team/alias: {provider: up, model: org/remote-7b}\n")
    process = ServerProcess(test_home, "--config", str(config), log=tmp_path_factory.mktemp("logs") / "server.log")
    yield process
    process.stop()


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def test_models_retrieve_answers_for_every_listed_model(client: openai.OpenAI) -> None:
    listed = {m.id: m for m in client.models.list()}
    assert set(listed) == {CHAT, EMBED, "team/alias", "org/remote-7b"}
    for name, entry in listed.items():
        retrieved = client.models.retrieve(name)  # the client escapes the slash of team/alias as %2F
        assert retrieved == entry
        assert (retrieved.id, retrieved.object, retrieved.owned_by) == (name, "model", "inferrelay")


def test_models_retrieve_of_an_unknown_model_is_openais_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("team/nope")
    assert caught.value.code == "model_not_found"
    assert caught.value.param == "model"


def test_an_overlong_prompt_is_context_length_exceeded(client: openai.OpenAI) -> None:
    long = [{"role": "user", "content": "hello " * 3000}]  # past SmolLM2's 2048-token context
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=CHAT, messages=long, max_tokens=5)  # type: ignore[arg-type]
    assert caught.value.code == "context_length_exceeded", "what LangChain maps to ContextOverflowError"
    assert caught.value.param == "messages"
    assert "maximum context length is 2048 tokens" in caught.value.message
    with pytest.raises(openai.BadRequestError) as embedding:  # cut to the window by default; refused when asked
        client.embeddings.create(model=EMBED, input=["short", "long " * 400], extra_body={"truncate": False})
    assert (embedding.value.code, embedding.value.param) == ("context_length_exceeded", "input")


@pytest.mark.parametrize("ids", [[101, 7592, 102], [[101, 7592, 102], [101, 2088, 102]]])
def test_token_id_embeddings_are_refused_with_the_langchain_setting(client: openai.OpenAI, ids: Any) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model=EMBED, input=ids)
    assert (caught.value.code, caught.value.param) == ("unsupported", "input")
    assert "embeds text only" in caught.value.message
    assert "check_embedding_ctx_length=False" in caught.value.message
    assert len(client.embeddings.create(model=EMBED, input=["hello"]).data) == 1, "text still embeds"


def test_an_image_part_is_refused_naming_the_message_and_part(client: openai.OpenAI) -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    messages = [FRANCE[0], {"role": "user", "content": [{"type": "text", "text": "What is this?"}, image]}]
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=CHAT, messages=messages, max_tokens=5)  # type: ignore[arg-type]
    assert (caught.value.code, caught.value.param) == ("unsupported", "messages.1.content.1")
    assert f"model {CHAT!r} takes text only" in caught.value.message
    assert "'image_url'" in caught.value.message
