"""Concurrent requests to the torch decoder are decoded together in padded batches, and each caller gets the
answer it would get alone: greedy token ids equal, seeded samples equal, constraints kept, a reader that leaves
does not stop the others."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from pathlib import Path

import pytest

from inferrelay.config.embedded import SMOLLM2
from inferrelay.engines.base import Constraint, GenerationRequest, Sampling, TokenTextModel
from inferrelay.engines.registry import EngineRegistry
from tests.conftest import SYSTEM

pytestmark = pytest.mark.slow

QUESTIONS = [
    "What is 2+2?",
    "Why is the sky blue? Explain in detail, with the physics of scattering.",
    "Name a colour.",
    "What do bees make, and how do they make it?",
    "Write a haiku about the sea.",
    "List three prime numbers.",
]


def load(home: Path, parallel: int) -> TokenTextModel:
    state = EngineRegistry.discover().state("torch")
    assert state is not None
    assert state.engine is not None, state.probe.reason
    spec = SMOLLM2.model_copy(update={"engine_options": {"torch": {"parallel": parallel}}})
    loaded = state.engine.load(spec, "cpu", home)
    assert isinstance(loaded, TokenTextModel)
    return loaded


@pytest.fixture(scope="module")
def alone(test_home: Path) -> TokenTextModel:
    return load(test_home, 1)


@pytest.fixture(scope="module")
def batched(test_home: Path) -> TokenTextModel:
    return load(test_home, 4)


def greedy(question: str, max_tokens: int = 24) -> GenerationRequest:
    return GenerationRequest(
        messages=[SYSTEM, {"role": "user", "content": question}], max_tokens=max_tokens, sampling=Sampling(0.0)
    )


def ids_of(model: TokenTextModel, request: GenerationRequest) -> list[int]:
    return list(model.generate_ids(model.encode(request), request.max_tokens or 24, request.sampling))


def test_concurrent_greedy_requests_get_their_alone_answers(alone: TokenTextModel, batched: TokenTextModel) -> None:
    requests = [greedy(q) for q in QUESTIONS]
    expected = [ids_of(alone, r) for r in requests]
    with ThreadPoolExecutor(len(requests)) as pool:
        together = list(pool.map(lambda r: ids_of(batched, r), requests))
    assert together == expected
    assert max(batched._batcher.batch_sizes) > 1, "the requests were decoded together"  # type: ignore[attr-defined]


def test_seeded_samples_and_whole_answers_match(alone: TokenTextModel, batched: TokenTextModel) -> None:
    sampled = [
        GenerationRequest(prompt=f"Once upon a time, {i}", max_tokens=16, sampling=Sampling(0.9, 0.95, seed=i))
        for i in range(4)
    ]
    expected = [alone.generate(r) for r in sampled]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(batched.generate, sampled))
    assert [p.text for p in together] == [p.text for p in expected]
    assert [p.completion_tokens for p in together] == [p.completion_tokens for p in expected]


def test_a_constrained_request_batched_with_free_ones_still_validates(
    alone: TokenTextModel, batched: TokenTextModel
) -> None:
    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer", "maximum": 999}},
        "required": ["n"],
        "additionalProperties": False,
    }
    constrained = GenerationRequest(
        messages=[{"role": "user", "content": "Give a number as JSON."}],
        max_tokens=48,
        sampling=Sampling(0.0),
        constraint=Constraint("json_schema", schema),
    )
    with ThreadPoolExecutor(4) as pool:
        free = [pool.submit(batched.generate, greedy(q)) for q in QUESTIONS[:3]]
        answer = pool.submit(batched.generate, constrained).result()
        assert all(f.result().completion_tokens > 0 for f in free)
    assert answer.finish_reason == "stop"
    assert isinstance(json.loads(answer.text)["n"], int)
    assert answer.text == alone.generate(constrained).text


def test_a_reader_that_leaves_does_not_stop_the_others(alone: TokenTextModel, batched: TokenTextModel) -> None:
    kept = greedy(QUESTIONS[1], 32)
    expected = alone.generate(kept).text

    def leave_early() -> int:
        return len(list(islice(batched.stream(greedy(QUESTIONS[3], 32)), 2)))

    with ThreadPoolExecutor(2) as pool:
        left = pool.submit(leave_early)
        whole = pool.submit(batched.generate, kept)
        assert left.result() == 2
        assert whole.result().text == expected
