"""LangChain's OpenAI integration (langchain-openai) against a real server with the embedded models.

LangChain is how many applications reach an OpenAI-compatible server: its
tool binding, structured output, embeddings and context-overflow error must
work here as they do against OpenAI. Never the tiny model's wording: calls
and objects that validate, vectors of the right shape, the right exception.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import openai
import pytest
import tiktoken
from langchain_core.exceptions import ContextOverflowError
from langchain_core.messages import AIMessage
from langchain_openai import ChatOpenAI, OpenAIEmbeddings
from pydantic import BaseModel, Field

from inferrelay.config.embedded import MINILM, SMOLLM2

pytestmark = pytest.mark.slow

ASK = "What is the weather in Paris, in celsius?"


class GetWeather(BaseModel):
    """The current weather in a city."""

    city: str = Field(max_length=40)
    unit: Literal["celsius", "fahrenheit"]


class Weather(BaseModel):
    city: str = Field(max_length=40)
    celsius: int
    sunny: bool


@pytest.fixture
def url(start_server: Any, test_home: Path) -> str:
    return f"{start_server(test_home).url}/v1"


def chat(url: str, **options: Any) -> ChatOpenAI:
    return ChatOpenAI(model=SMOLLM2.name, base_url=url, api_key="x", temperature=0, max_retries=0, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize("responses_api", [False, True], ids=["chat", "responses"])
@pytest.mark.parametrize("choice", ["GetWeather", "any"])
def test_a_bound_tool_forced_comes_back_as_a_valid_tool_call(url: str, choice: str, responses_api: bool) -> None:
    model = chat(url, max_tokens=96, use_responses_api=responses_api).bind_tools([GetWeather], tool_choice=choice)
    answer = model.invoke(ASK)
    assert isinstance(answer, AIMessage)
    (call,) = answer.tool_calls
    assert call["name"] == "GetWeather"
    assert call["id"]
    GetWeather.model_validate(call["args"])


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_structured_output_returns_a_valid_instance(url: str, method: str) -> None:
    model = chat(url, max_tokens=200).with_structured_output(Weather, method=method)  # type: ignore[arg-type]
    answer = model.invoke("Describe the weather in Paris today.")
    assert isinstance(answer, Weather)
    assert answer == model.invoke("Describe the weather in Paris today.")  # greedy: the same object


def test_embeddings_of_texts_have_the_models_width(url: str) -> None:
    embeddings = OpenAIEmbeddings(model=MINILM.name, base_url=url, api_key="x", check_embedding_ctx_length=False)  # type: ignore[arg-type]
    vectors = embeddings.embed_documents(["The cat sat on the mat.", "Paris is in France."])
    assert [len(v) for v in vectors] == [384, 384]
    assert vectors[0] != vectors[1]
    assert embeddings.embed_query("The cat sat on the mat.") == pytest.approx(vectors[0], abs=1e-5)


def test_embeddings_sent_as_token_ids_are_a_400_naming_the_fix(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """By default LangChain tokenises with tiktoken and sends token ids, which a text-only model cannot read.
    tiktoken's vocabularies are downloaded on first use; offline, a byte-level encoding stands in for them."""
    ranks = {bytes([i]): i for i in range(256)}
    encoding = tiktoken.Encoding("bytes", pat_str=r"\S+|\s+", mergeable_ranks=ranks, special_tokens={})
    monkeypatch.setattr(tiktoken, "encoding_for_model", lambda _name: encoding)
    embeddings = OpenAIEmbeddings(model=MINILM.name, base_url=url, api_key="x", max_retries=0)  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError) as refused:  # a 500 would fail here as InternalServerError
        embeddings.embed_documents(["The cat sat on the mat."])
    assert refused.value.status_code == 400
    assert "check_embedding_ctx_length=False" in refused.value.message


def test_a_prompt_over_the_context_window_is_langchains_context_overflow(url: str) -> None:
    """The server answers OpenAI's 400 with code `context_length_exceeded`. langchain-openai 1.7 turns that into
    its ContextOverflowError by finding the code in `str(error)`, which openai>=3 fills with the message only:
    the server's message ends with the code, so LangChain's overflow handling fires."""
    with pytest.raises(ContextOverflowError) as overflow:
        chat(url, max_tokens=8).invoke("word " * 40_000)
    assert isinstance(overflow.value, openai.BadRequestError)
    assert overflow.value.status_code == 400
    assert overflow.value.code == "context_length_exceeded"
