"""A greedy request through the llamacpp engine gets one answer, whatever the model ran before.

llama-cpp-python keeps the KV cache of the longest prefix shared with the previous prompt and evaluates
only the rest, in a batch of another size, which changes the arithmetic: on the AVX2 build a repeated
"What is the capital of France?" got another answer than its first. The engine evaluates every request
from scratch; batch generate's resume promise depends on it.
"""

from __future__ import annotations

from itertools import islice
from pathlib import Path

import pytest

from inferrelay.config.embedded import SMOLLM2
from inferrelay.engines.base import GenerationRequest, Piece, Sampling, TokenTextModel
from inferrelay.engines.registry import EngineRegistry
from tests.conftest import FRANCE, SYSTEM
from tests.references import Answer, llama_cpp_chat

pytestmark = pytest.mark.slow

QUESTIONS = ["What is 2+2?", "Why is the sky blue?", "Name a colour.", "What do bees make?"]


@pytest.fixture(scope="module")
def model(test_home: Path) -> TokenTextModel:
    state = EngineRegistry.discover().state("llamacpp")
    assert state is not None
    assert state.engine is not None, state.probe.reason
    loaded = state.engine.load(SMOLLM2, "cpu", test_home)
    assert isinstance(loaded, TokenTextModel)
    return loaded


def greedy(messages: list[dict[str, str]], max_tokens: int = 40) -> GenerationRequest:
    return GenerationRequest(messages=messages, max_tokens=max_tokens, sampling=Sampling(0.0))


def ask(question: str) -> list[dict[str, str]]:
    return [SYSTEM, {"role": "user", "content": question}]


def answer(piece: Piece) -> Answer:
    return Answer(piece.text, piece.finish_reason or "", piece.prompt_tokens, piece.completion_tokens)


def test_sixteen_identical_greedy_requests_get_a_fresh_llamas_answer(model: TokenTextModel) -> None:
    """Between two of them: nothing (a repeat, all but one prompt token cached), a chat sharing the system
    prompt, a completion, a stream dropped after one piece, a sampled request."""
    between = [
        lambda i: None,
        lambda i: model.generate(greedy(ask(QUESTIONS[i % len(QUESTIONS)]), 16)),
        lambda i: model.generate(GenerationRequest(prompt="Once upon a time", max_tokens=8, sampling=Sampling(0.0))),
        lambda i: list(islice(model.stream(greedy(FRANCE)), 1)),
        lambda i: model.generate(GenerationRequest(messages=FRANCE, max_tokens=8, sampling=Sampling(1.0, seed=i))),
    ]
    answers = []
    for i in range(16):
        answers.append(answer(model.generate(greedy(FRANCE, 32))))
        between[i % len(between)](i)
    assert len(set(answers)) == 1, [a.text for a in answers]
    assert answers[0] == llama_cpp_chat(FRANCE, 32), "a fresh Llama's answer: nothing cached"


def test_prompts_sharing_a_prefix_each_get_a_fresh_llamas_answer(model: TokenTextModel) -> None:
    for question in QUESTIONS:  # each after the last: the system prompt's tokens are a shared prefix
        messages = ask(question)
        assert answer(model.generate(greedy(messages))) == llama_cpp_chat(messages, 40), question
