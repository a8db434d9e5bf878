"""Log probabilities and penalties, engine-free: decoding.LogitSteps' arithmetic, how records follow the text into
pieces, and OpenAI's logprobs shapes for chat and completions, whole and streamed."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator, Iterator

import numpy as np
import pytest

from inferrelay.engines.base import GenerationRequest, Piece, Sampling, TokenTextModel
from inferrelay.engines.decoding import (
    LogitSteps,
    LogprobsByPiece,
    ScoredToken,
    TokenLogprob,
    byte_level_bytes,
)
from inferrelay.server.schemas import ChatCompletionRequest, CompletionRequest
from inferrelay.server.shapes import ResponseShape
from inferrelay.server.streams import local_events


def log_softmax(row: np.ndarray) -> np.ndarray:
    shifted = row.astype(np.float64) - row.max()
    return shifted - math.log(np.exp(shifted).sum())


def test_the_chosen_tokens_logprob_is_the_raw_rows_log_softmax_and_top_is_sorted() -> None:
    row = np.random.default_rng(0).standard_normal(50).astype(np.float32) * 4
    steps = LogitSteps(Sampling(temperature=0.7, logprobs=5))
    steps.adjust(row.copy())
    scored = steps.chosen(7)
    assert isinstance(scored, ScoredToken)
    assert scored == 7
    expected = log_softmax(row)
    assert scored.logprob == pytest.approx(expected[7], abs=1e-5)
    assert [i for i, _ in scored.top] == list(np.argsort(-row)[:5])
    values = [lp for _, lp in scored.top]
    assert values == sorted(values, reverse=True)
    assert all(lp <= 0 for lp in values)
    assert values == pytest.approx(expected[np.argsort(-row)[:5]], abs=1e-5)


def test_logprobs_are_of_the_model_not_of_the_penalized_row() -> None:
    row = np.array([3.0, 1.0, 0.0], dtype=np.float32)
    steps = LogitSteps(Sampling(frequency_penalty=2.0, logprobs=0))
    steps.adjust(row.copy())
    steps.chosen(0)
    penalized = steps.adjust(row.copy())
    assert penalized[0] == pytest.approx(1.0)  # 3 - 2 * 1
    scored = steps.chosen(1)
    assert isinstance(scored, ScoredToken)
    assert scored.logprob == pytest.approx(log_softmax(row)[1], abs=1e-6)
    assert scored.top == ()  # logprobs=0: the chosen token only


@pytest.mark.parametrize(("presence", "frequency"), [(0.5, 0.0), (0.0, 0.75), (1.0, -0.5), (-1.5, 2.0)])
def test_penalties_are_openais(presence: float, frequency: float) -> None:
    """logits[t] -= presence * (count > 0) + frequency * count, over the tokens generated so far."""
    steps = LogitSteps(Sampling(presence_penalty=presence, frequency_penalty=frequency))
    assert steps.active
    for token in (2, 2, 2, 4):
        steps.adjust(np.zeros(6, dtype=np.float32))
        assert type(steps.chosen(token)) is int  # no logprobs asked: a plain id
    row = steps.adjust(np.zeros(6, dtype=np.float32))
    counts = np.array([0, 0, 3, 0, 1, 0])
    assert row == pytest.approx(-(presence * (counts > 0) + frequency * counts))


def test_plain_sampling_leaves_the_logits_alone() -> None:
    steps = LogitSteps(Sampling(temperature=0.5, seed=3))
    assert not steps.active
    assert type(steps.chosen(9)) is int


def test_byte_level_entries_are_read_as_their_bytes() -> None:
    assert byte_level_bytes("Ġthe") == b" the"
    assert byte_level_bytes("Ċ") == b"\n"
    assert byte_level_bytes("âĢ") == "’".encode()[:2]  # half a character: its bytes, not U+FFFD
    assert byte_level_bytes("▁the") is None  # SentencePiece's: not byte-level


class Letters(TokenTextModel):
    """A model whose token i is the i-th letter; it yields `script` as scored tokens when asked."""

    engine_name = "letters"
    context_length = 100

    def __init__(self, script: list[int]) -> None:
        self.script = script

    def encode(self, request: GenerationRequest) -> list[int]:
        return [0]

    def generate_ids(self, ids: list[int], max_new: int, sampling: Sampling) -> Iterator[int]:
        for token in self.script[:max_new]:
            yield ScoredToken(token, -0.5, ((token, -0.5), (25, -2.0))) if sampling.logprobs is not None else token

    def detokenize(self, ids: list[int]) -> str:
        return "".join(chr(ord("a") + i) for i in ids)


def test_each_piece_carries_its_own_tokens_and_a_stop_string_keeps_them_together() -> None:
    model = Letters([0, 1, 2, 3, 4])  # "abcde"
    pieces = list(model.stream(GenerationRequest(prompt="x", stop=("cd",), sampling=Sampling(logprobs=1))))
    text = "".join(p.text for p in pieces)
    assert text == "ab"
    tokens = [t.token for p in pieces for t in p.logprobs or []]
    assert tokens[:2] == ["a", "b"]
    for piece in pieces:
        if piece.text:
            assert "".join(t.token for t in piece.logprobs or []).startswith(piece.text)
    whole = model.generate(GenerationRequest(prompt="x", sampling=Sampling(logprobs=1)))
    assert [t.token for t in whole.logprobs or []] == list("abcde")
    assert whole.logprobs is not None
    assert whole.logprobs[0].top[1].token == "z"


def test_no_logprobs_asked_none_given() -> None:
    whole = Letters([0, 1]).generate(GenerationRequest(prompt="x"))
    assert whole.logprobs is None
    assert LogprobsByPiece(False, bytes).take() is None


def record(token: str, logprob: float, *top: tuple[str, float]) -> TokenLogprob:
    alts = tuple(TokenLogprob(t, t.encode(), lp) for t, lp in top)
    return TokenLogprob(token, token.encode(), logprob, alts)


ANSWER = [record("Hi", -0.1, ("Hi", -0.1), ("Hello", -2.5)), record(" there", -0.7, ("!", -0.6), (" there", -0.7))]


def test_chat_logprobs_are_openais_shape() -> None:
    body = ResponseShape("m", chat=True).whole(Piece("Hi there", "stop", 3, 2, ANSWER))
    logprobs = body["choices"][0]["logprobs"]
    assert logprobs == {
        "content": [
            {
                "token": "Hi",
                "logprob": -0.1,
                "bytes": [72, 105],
                "top_logprobs": [
                    {"token": "Hi", "logprob": -0.1, "bytes": [72, 105]},
                    {"token": "Hello", "logprob": -2.5, "bytes": list(b"Hello")},
                ],
            },
            {
                "token": " there",
                "logprob": -0.7,
                "bytes": list(b" there"),
                "top_logprobs": [
                    {"token": "!", "logprob": -0.6, "bytes": [33]},
                    {"token": " there", "logprob": -0.7, "bytes": list(b" there")},
                ],
            },
        ],
        "refusal": None,
    }
    assert "logprobs" not in ResponseShape("m", chat=True).whole(Piece("Hi", "stop"))["choices"][0]


def test_completion_logprobs_are_the_legacy_shape_with_the_chosen_token_among_the_top() -> None:
    body = ResponseShape("m", chat=False).whole(Piece("Hi there", "stop", 3, 2, ANSWER))
    assert body["choices"][0]["logprobs"] == {
        "tokens": ["Hi", " there"],
        "token_logprobs": [-0.1, -0.7],
        "top_logprobs": [{"Hi": -0.1, "Hello": -2.5}, {"!": -0.6, " there": -0.7}],
        "text_offset": [0, 2],
    }


async def _events(shape: ResponseShape, pieces: list[Piece]) -> list[dict[str, object]]:
    async def rest() -> AsyncIterator[Piece]:
        for piece in pieces[1:]:
            yield piece

    events = [e async for e in local_events(shape, pieces[0], rest(), False, lambda _: None)]
    return [json.loads(e.removeprefix("data: ")) for e in events]


def test_streamed_chunks_carry_their_own_tokens_and_offsets() -> None:
    pieces = [Piece("Hi", logprobs=ANSWER[:1]), Piece(" there", logprobs=ANSWER[1:]), Piece("", "stop", 3, 2, [])]
    chat = asyncio.run(_events(ResponseShape("m", chat=True), pieces))
    texts = [c for c in chat if c["choices"] and c["choices"][0]["delta"].get("content")]  # type: ignore[index]
    assert [[t["token"] for t in c["choices"][0]["logprobs"]["content"]] for c in texts] == [["Hi"], [" there"]]  # type: ignore[index]
    legacy = asyncio.run(_events(ResponseShape("m", chat=False), pieces))
    offsets = [c["choices"][0]["logprobs"]["text_offset"] for c in legacy if c["choices"][0]["text"]]  # type: ignore[index]
    assert offsets == [[0], [2]]


@pytest.mark.parametrize(
    ("body", "wanted"),
    [
        ({"logprobs": True}, 0),
        ({"logprobs": True, "top_logprobs": 4}, 4),
        ({"top_logprobs": 2}, 2),
        ({"logprobs": False}, None),
        ({}, None),
    ],
)
def test_chat_requests_ask_the_engine_for_logprobs(body: dict[str, object], wanted: int | None) -> None:
    request = ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "x"}], **body}
    )
    assert request.to_generation().sampling.logprobs == wanted
    assert ("logprobs" in [n.param for n in request.needs().items]) == (wanted is not None)


def test_completion_logprobs_is_the_number_of_alternatives() -> None:
    request = CompletionRequest.model_validate({"model": "m", "prompt": "x", "logprobs": 3, "presence_penalty": 1})
    sampling = request.to_generation().sampling
    assert (sampling.logprobs, sampling.presence_penalty, sampling.frequency_penalty) == (3, 1.0, 0.0)
    assert [n.param for n in request.needs().items] == ["logprobs", "presence_penalty"]
    with pytest.raises(ValueError, match="less than or equal to 5"):
        CompletionRequest.model_validate({"model": "m", "prompt": "x", "logprobs": 6})
