"""Log probabilities and penalties through the official `openai` client against a real server (llama.cpp's step,
the embedded SmolLM2): the client's own types parse them, streamed and whole, chat and completions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
import pytest

from inferrelay.config.embedded import SMOLLM2
from tests.conftest import FRANCE

pytestmark = pytest.mark.slow


@pytest.fixture
def client(start_server: Any, test_home: Path) -> openai.OpenAI:
    server = start_server(test_home)
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def test_chat_logprobs_whole_and_streamed_agree(client: openai.OpenAI) -> None:
    asked: dict[str, Any] = {"logprobs": True, "top_logprobs": 3, "temperature": 0, "max_tokens": 16}
    raw = client.chat.completions.with_raw_response.create(model=SMOLLM2.name, messages=FRANCE, **asked)  # type: ignore[arg-type]
    assert raw.headers["x-inferrelay-backend"].startswith("local/")
    choice = raw.parse().choices[0]
    assert choice.logprobs is not None
    content = choice.logprobs.content or []
    assert "".join(t.token for t in content) == choice.message.content
    for token in content:
        assert token.logprob <= 0
        assert bytes(token.bytes or []).decode(errors="replace") == token.token
        assert [t.logprob for t in token.top_logprobs] == sorted((t.logprob for t in token.top_logprobs), reverse=True)
        assert token.top_logprobs[0].token == token.token  # greedy: the chosen is the likeliest
        assert len(token.top_logprobs) == 3

    chunks = client.chat.completions.create(model=SMOLLM2.name, messages=FRANCE, stream=True, **asked)  # type: ignore[call-overload]
    streamed = [
        t
        for chunk in chunks
        if chunk.choices and chunk.choices[0].logprobs
        for t in chunk.choices[0].logprobs.content or []
    ]
    assert [(t.token, t.logprob) for t in streamed] == [(t.token, t.logprob) for t in content]


def test_completion_logprobs_are_the_legacy_shape(client: openai.OpenAI) -> None:
    answer = client.completions.create(
        model=SMOLLM2.name, prompt="The capital of France is", logprobs=2, temperature=0, max_tokens=8
    )
    logprobs = answer.choices[0].logprobs
    assert logprobs is not None
    tokens = logprobs.tokens or []
    assert "".join(tokens) == answer.choices[0].text
    assert len(logprobs.token_logprobs or []) == len(tokens) == len(logprobs.top_logprobs or [])
    assert logprobs.text_offset == [sum(len(t) for t in tokens[:i]) for i in range(len(tokens))]
    for token, chosen, top in zip(tokens, logprobs.token_logprobs or [], logprobs.top_logprobs or [], strict=True):
        assert top[token] == chosen  # the chosen token is always among the top, as OpenAI's
        assert chosen == max(top.values())
        assert 1 <= len(top) <= 3


def test_a_frequency_penalty_is_served_locally_and_breaks_repetition(client: openai.OpenAI) -> None:
    prompt = "one two one two one two one two one two one two"

    def most_repeated(**penalty: float) -> int:
        answer = client.completions.create(
            model=SMOLLM2.name, prompt=prompt, logprobs=0, temperature=0, max_tokens=30, **penalty
        )
        tokens = answer.choices[0].logprobs.tokens or []  # type: ignore[union-attr]
        return max(tokens.count(t) for t in tokens)

    plain, penalized = most_repeated(), most_repeated(frequency_penalty=2.0)
    assert plain >= 8
    assert penalized <= 4
