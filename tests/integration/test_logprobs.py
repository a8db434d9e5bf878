"""Log probabilities and penalties on llamacpp, onnx and torch with the real SmolLM2.

Never the tiny model's wording: the records must be valid (logprobs <= 0, alternatives sorted, the greedy choice
the likeliest), add up to the answer, repeat exactly, match transformers' own log-softmax (torch), and the
penalties must change the greedy answer's token counts the way OpenAI's formula says.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from inferrelay.config.embedded import SMOLLM2
from inferrelay.config.sources import resolve_source
from inferrelay.engines.base import GenerationRequest, Sampling, TokenTextModel
from inferrelay.engines.decoding import TokenLogprob
from inferrelay.engines.registry import EngineRegistry
from tests.conftest import FRANCE

pytestmark = pytest.mark.slow

REPEATS = "one two one two one two one two one two one two one two"


@pytest.fixture(scope="module", params=["llamacpp", "onnx", "torch"])
def decoder(request: pytest.FixtureRequest, test_home: Path) -> TokenTextModel:
    state = EngineRegistry.discover().state(request.param)
    assert state is not None
    assert state.engine is not None, state.probe.reason
    model = state.engine.load(SMOLLM2, "auto", test_home)
    assert isinstance(model, TokenTextModel)
    return model


def greedy(decoder: TokenTextModel, top: int, **asked: Any) -> tuple[str, list[TokenLogprob]]:
    request = GenerationRequest(max_tokens=24, sampling=Sampling(0.0, logprobs=top), **asked)
    answer = decoder.generate(request)
    assert answer.logprobs is not None
    return answer.text, answer.logprobs


@pytest.mark.parametrize("asked", [{"messages": FRANCE}, {"prompt": "The capital of France is"}])
def test_greedy_logprobs_are_valid_and_the_choice_is_the_likeliest(decoder: TokenTextModel, asked: Any) -> None:
    text, records = greedy(decoder, 5, **asked)
    assert records, decoder.engine_name
    assert b"".join(r.bytes for r in records).decode() == text  # one record per token of the answer, in order
    for record in records:
        assert record.logprob <= 0
        assert len(record.top) == 5
        values = [alt.logprob for alt in record.top]
        assert values == sorted(values, reverse=True)
        assert all(v <= 0 for v in values)
        assert record.top[0].token == record.token, decoder.engine_name
        assert record.logprob == pytest.approx(values[0], abs=1e-6)
        assert record.token == record.bytes.decode("utf-8", errors="replace")


def test_the_same_request_gives_the_same_logprobs(decoder: TokenTextModel) -> None:
    assert greedy(decoder, 3, messages=FRANCE) == greedy(decoder, 3, messages=FRANCE)


def test_streamed_pieces_carry_the_whole_answers_records(decoder: TokenTextModel) -> None:
    request = GenerationRequest(messages=FRANCE, max_tokens=24, stop=("Paris",), sampling=Sampling(0.0, logprobs=2))
    pieces = list(decoder.stream(request))
    streamed = [r for p in pieces for r in p.logprobs or []]
    assert streamed == decoder.generate(request).logprobs
    for piece in pieces:
        if piece.text:  # a piece's text is made of its own tokens (a stop string cuts the last one)
            made = b"".join(r.bytes for r in piece.logprobs or []).decode(errors="replace")
            assert made.startswith(piece.text) or piece.text.startswith(made), (piece.text, made)


def test_sampled_tokens_have_their_logprobs_too(decoder: TokenTextModel) -> None:
    request = GenerationRequest(messages=FRANCE, max_tokens=12, sampling=Sampling(1.0, seed=5, logprobs=0))
    first, again = decoder.generate(request), decoder.generate(request)
    assert first.logprobs is not None
    assert first.logprobs == again.logprobs
    assert all(r.logprob <= 0 and r.top == () for r in first.logprobs)
    assert len(first.logprobs) == first.completion_tokens


def test_torch_logprobs_are_transformers_own_log_softmax(test_home: Path) -> None:
    """The chosen tokens' logprobs against one forward pass of transformers over prompt + answer."""
    import torch
    import transformers

    from inferrelay.engines.torch import from_pretrained_args

    state = EngineRegistry.discover().state("torch")
    assert state is not None
    assert state.engine is not None
    engine_model = state.engine.load(SMOLLM2, "auto", test_home)
    assert isinstance(engine_model, TokenTextModel)
    request = GenerationRequest(messages=FRANCE, max_tokens=16, sampling=Sampling(0.0, logprobs=0))
    prompt = engine_model.encode(request)
    chosen = list(engine_model.generate_ids(prompt, 16, request.sampling))
    engine_model.close()

    kwargs = from_pretrained_args(resolve_source(SMOLLM2.source))
    model = transformers.AutoModelForCausalLM.from_pretrained(**kwargs, dtype=torch.float32).eval()
    with torch.inference_mode():
        logits = model(torch.tensor([prompt + [int(t) for t in chosen]])).logits[0].float()
    expected = torch.log_softmax(logits, dim=-1)[len(prompt) - 1 : -1]
    for step, token in enumerate(chosen):
        assert token.logprob == pytest.approx(float(expected[step, token]), abs=1e-3), step  # type: ignore[attr-defined]


def counts(decoder: TokenTextModel, sampling: Sampling) -> Counter[int]:
    ids = decoder.encode(GenerationRequest(prompt=REPEATS))
    return Counter(decoder.generate_ids(ids, 30, sampling))


def test_penalties_break_the_repetition_of_a_repeating_prompt(decoder: TokenTextModel) -> None:
    plain = counts(decoder, Sampling(0.0))
    frequency = counts(decoder, Sampling(0.0, frequency_penalty=2.0))
    presence = counts(decoder, Sampling(0.0, presence_penalty=2.0))
    print(f"{decoder.engine_name}: most repeated token of 30, plain {plain.most_common(1)}, "
          f"frequency 2.0 {frequency.most_common(1)}, presence 2.0 {presence.most_common(1)}")  # fmt: skip
    assert max(plain.values()) >= 8  # the model carries the pattern on: the test can see a penalty work
    assert max(frequency.values()) <= 4
    assert len(frequency) > len(plain)
    assert len(presence) > len(plain)  # more distinct tokens
    assert max(presence.values()) < max(plain.values())


def test_a_negative_penalty_makes_repetition_likelier(decoder: TokenTextModel) -> None:
    plain = counts(decoder, Sampling(0.0, frequency_penalty=0.0))
    negative = counts(decoder, Sampling(0.0, frequency_penalty=-1.0, presence_penalty=-1.0))
    assert len(negative) <= len(plain)
