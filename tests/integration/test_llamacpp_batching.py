"""Continuous batching in the llamacpp engine: requests from several threads decoded together, in process and
through a worker process, compared with the same requests decoded alone by the unbatched engine.

What llama.cpp guarantees, and so what is asserted: a request decoded alone in the batched context gets exactly
the unbatched answer (the same kernels on the same rows); decoded beside others, each step's logits are the same
up to float rounding (matrix products over more rows add up in another order), so a greedy answer may leave the
unbatched one only where two tokens were all but tied (docs/engines.md, "Continuous batching").
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from inferrelay.config.embedded import SMOLLM2
from inferrelay.engines.base import Constraint, GenerationRequest, LoadedModel, TextModel, TokenTextModel
from inferrelay.engines.decoding import Sampling
from inferrelay.engines.registry import EngineRegistry
from inferrelay.runtime.workers import start_worker
from tests.conftest import SYSTEM

pytestmark = pytest.mark.slow

QUESTIONS = [
    "What is the capital of France?", "Why is the sky blue?", "Name a colour.", "What do bees make?",
    "What is 2+2?", "Write a haiku about the sea.", "Who wrote Hamlet?", "Explain gravity in one sentence.",
]  # fmt: skip
TOKENS = 48
NEAR_TIE = 0.5
"""Largest gap in log probability between the unbatched token and the batched one where they part: the
quantized kernels over more rows moved a step by up to 0.134 nats here; a wrong state would move it by more."""
SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
    "required": ["city", "population"],
    "additionalProperties": False,
}


def load(test_home: Path, parallel: int) -> TokenTextModel:
    state = EngineRegistry.discover().state("llamacpp")
    assert state is not None
    assert state.engine is not None, state.probe.reason
    spec = SMOLLM2.model_copy(update={"engine_options": {"llamacpp": {"parallel": parallel}}})
    loaded = state.engine.load(spec, "cpu", test_home)
    assert isinstance(loaded, TokenTextModel)
    return loaded


@pytest.fixture(scope="module")
def alone(test_home: Path) -> Iterator[TokenTextModel]:
    model = load(test_home, 1)
    yield model
    model.close()


@pytest.fixture(scope="module")
def batched(test_home: Path) -> Iterator[TokenTextModel]:
    model = load(test_home, 4)
    yield model
    model.close()


def prompt(model: TokenTextModel, question: str) -> list[int]:
    return model.encode(GenerationRequest(messages=[SYSTEM, {"role": "user", "content": question}]))


GREEDY = Sampling(0.0)


def ids(model: TokenTextModel, question: str, sampling: Sampling = GREEDY) -> list[int]:
    return [int(t) for t in model.generate_ids(prompt(model, question), TOKENS, sampling)]


def in_threads(calls: list[Callable[[], Any]]) -> list[Any]:
    results: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        try:
            results[i] = calls[i]()
        except BaseException as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


def assert_same_up_to_rounding(alone: TokenTextModel, question: str, unbatched: list[int], got: list[int]) -> None:
    """Equal, or parting where the unbatched step's two candidates were all but tied."""
    if got == unbatched:
        return
    part = next((i for i, (a, b) in enumerate(zip(unbatched, got, strict=False)) if a != b), None)
    assert part is not None, f"{question!r}: one answer ends where the other goes on: {unbatched} vs {got}"
    ask = prompt(alone, question) + unbatched[:part]
    step = next(iter(alone.generate_ids(ask, 1, Sampling(0.0, logprobs=5))))
    alternatives = dict(step.top)  # type: ignore[attr-defined]
    assert got[part] in alternatives, f"{question!r}: token {part} is {got[part]}, not among the likeliest 5"
    gap = alternatives[unbatched[part]] - alternatives[got[part]]
    assert gap <= NEAR_TIE, f"{question!r}: token {part} parts from the unbatched answer by {gap:.3f} nats"


def test_alone_in_the_batched_context_is_the_unbatched_answer(alone: TokenTextModel, batched: TokenTextModel) -> None:
    assert batched.parallel == 4
    assert alone.parallel == 1
    for question in QUESTIONS:
        assert ids(batched, question) == ids(alone, question), question


def test_concurrent_greedy_requests_match_the_unbatched_answers(alone: TokenTextModel, batched: TokenTextModel) -> None:
    unbatched = {q: ids(alone, q) for q in QUESTIONS}
    got = in_threads([lambda q=q: ids(batched, q) for q in QUESTIONS])  # 8 threads on 4 sequences: some wait
    equal = sum(g == unbatched[q] for q, g in zip(QUESTIONS, got, strict=True))
    print(f"{equal} of {len(QUESTIONS)} concurrent greedy answers equal to the unbatched ones")
    for question, answer in zip(QUESTIONS, got, strict=True):
        assert_same_up_to_rounding(alone, question, unbatched[question], answer)


def test_a_request_joins_another_mid_decode_and_streams_token_by_token(
    alone: TokenTextModel, batched: TokenTextModel
) -> None:
    first, second = QUESTIONS[1], QUESTIONS[6]
    tokens = batched.generate_ids(prompt(batched, first), TOKENS, Sampling(0.0))
    head = [int(next(tokens)) for _ in range(5)]  # the first tokens arrive before the answer is done
    joined = in_threads([lambda: ids(batched, second), lambda: head + [int(t) for t in tokens]])
    assert_same_up_to_rounding(alone, second, ids(alone, second), joined[0])
    assert_same_up_to_rounding(alone, first, ids(alone, first), joined[1])


def test_stream_pieces_add_up_to_the_answer(batched: TokenTextModel) -> None:
    request = GenerationRequest(messages=[SYSTEM, {"role": "user", "content": QUESTIONS[0]}], max_tokens=TOKENS,
                                sampling=Sampling(0.0))  # fmt: skip
    pieces = list(batched.stream(request))
    assert len(pieces) > 2
    assert "".join(p.text for p in pieces) == batched.generate(request).text


def test_a_constrained_request_batched_with_free_ones_still_validates(batched: TokenTextModel) -> None:
    constrained = GenerationRequest(
        messages=[SYSTEM, {"role": "user", "content": "Give a city and its population as JSON."}],
        max_tokens=96,
        sampling=Sampling(0.0),
        constraint=Constraint("json_schema", SCHEMA),
    )
    free = [GenerationRequest(messages=[SYSTEM, {"role": "user", "content": q}], max_tokens=TOKENS,
                              sampling=Sampling(0.7, seed=i)) for i, q in enumerate(QUESTIONS[:3])]  # fmt: skip
    answers = in_threads([lambda r=r: batched.generate(r) for r in [free[0], constrained, *free[1:]]])
    jsonschema.validate(json.loads(answers[1].text), SCHEMA)
    assert all(a.completion_tokens > 0 for a in answers)


def test_seeded_sampling_batched_is_the_unbatched_draw(alone: TokenTextModel, batched: TokenTextModel) -> None:
    """The same sampler chain and seed: a sampled answer differs only where greedy ones may (rounding)."""
    sampling = Sampling(0.8, seed=7)
    assert ids(batched, QUESTIONS[3], sampling) == ids(alone, QUESTIONS[3], sampling)


def cancel_one_of_three(model: TextModel) -> list[str]:
    """Three streams; the second is dropped after its first piece; the others run to their end."""

    def request(q: str) -> GenerationRequest:
        return GenerationRequest(messages=[SYSTEM, {"role": "user", "content": q}], max_tokens=TOKENS,
                                 sampling=Sampling(0.0))  # fmt: skip

    def dropped() -> str:
        stream = model.stream(request(QUESTIONS[2]))
        text = next(stream).text
        stream.close()  # type: ignore[attr-defined]
        return text

    def whole(q: str) -> str:
        return "".join(p.text for p in model.stream(request(q)))

    return in_threads([lambda: whole(QUESTIONS[0]), dropped, lambda: whole(QUESTIONS[1])])  # type: ignore[no-any-return]


def test_cancelling_one_stream_leaves_the_others_going(alone: TokenTextModel, batched: TokenTextModel) -> None:
    texts = cancel_one_of_three(batched)
    assert texts[0]
    assert texts[2]
    # every sequence freed: four requests at once still run together, and a fifth waits its turn
    assert all(in_threads([lambda q=q: ids(batched, q) for q in QUESTIONS[:5]]))


@pytest.fixture(scope="module")
def worker(test_home: Path) -> Iterator[LoadedModel]:
    state = EngineRegistry.discover().state("llamacpp")
    assert state is not None
    assert state.engine is not None
    spec = SMOLLM2.model_copy(update={"engine_options": {"llamacpp": {"parallel": 4}}})
    proxy = start_worker(state.engine, spec, "cpu", test_home)
    yield proxy
    proxy.close()


def test_concurrent_calls_through_a_worker_process(alone: TokenTextModel, worker: LoadedModel) -> None:
    assert isinstance(worker, TextModel)
    assert worker.parallel == 4
    requests = [GenerationRequest(messages=[SYSTEM, {"role": "user", "content": q}], max_tokens=TOKENS,
                                  sampling=Sampling(0.0)) for q in QUESTIONS[:6]]  # fmt: skip
    got = in_threads([lambda r=r: worker.generate(r) for r in requests])
    assert all(a.completion_tokens > 0 and a.finish_reason in ("stop", "length") for a in got)
    assert worker.generate(requests[0]).text == alone.generate(requests[0]).text  # alone: the unbatched answer
    texts = cancel_one_of_three(worker)
    assert texts[0]
    assert texts[2]
    assert worker.generate(requests[1]).text == alone.generate(requests[1]).text  # it serves on after the cancel
