"""Dynamic batching of embeddings: concurrent callers gathered into one call on the slot, each answered alone.

The first caller's call is held on the worker thread by a gate the test
opens, so the callers that arrive meanwhile are known to be pending together;
every wait on a thread is bounded.
"""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from inferrelay.config.schema import ModelSpec
from inferrelay.engines.base import EmbeddingModel, Embeddings
from inferrelay.engines.decoding import InputTooLong, check_input_lengths
from inferrelay.errors import ErrorKind, InferrelayError
from inferrelay.routing.batching import Embedded, embed_counted
from inferrelay.routing.coalesce import Answer, EmbedCoalescer, apportion, coalescer_for
from inferrelay.runtime.slots import UNLOADED, LoadedSlot, Placement

BOUND_S = 10


class Words(EmbeddingModel):
    """One token per word; a text's vector is (its length, its first letter): rows are easy to check.

    It refuses texts of more than `limit` words as an engine does, runs out of memory above `fits` texts a
    batch, and can hold its first call until a gate opens.
    """

    engine_name = "words"
    context_length = 8

    def __init__(self, fits: int = 1000, hold_first: bool = False) -> None:
        self.fits = fits
        self.calls: list[list[str]] = []
        self.started = threading.Event()
        self.gate = threading.Event()
        if not hold_first:
            self.gate.set()

    def embed(self, texts: list[str], truncate: bool = True) -> Embeddings:
        self.calls.append(list(texts))
        self.started.set()
        if not self.gate.wait(BOUND_S):
            raise TimeoutError("the gate was never opened")
        if len(texts) > self.fits:
            raise InferrelayError(ErrorKind.OUT_OF_MEMORY, f"{len(texts)} texts do not fit")
        check_input_lengths([len(t.split()) for t in texts], self.context_length)
        rows = [[float(len(t)), float(ord(t[0]))] for t in texts]
        return Embeddings(np.array(rows, dtype=np.float32), sum(len(t.split()) for t in texts))

    async def running(self) -> None:
        assert await asyncio.to_thread(self.started.wait, BOUND_S), "the first call never started"


def make_slot(max_queue: int = 64) -> LoadedSlot:
    spec = ModelSpec(name="m", source="fake", capabilities=["embeddings"], engines=["fake"])  # type: ignore[list-item]
    placement = Placement("fake", "cpu", "configured", "float32", None, 0, 0.0)
    return LoadedSlot(UNLOADED, spec, placement, keep_alive=-1, max_queue=max_queue)


def coalescer(model: Words, slot: LoadedSlot, batch_size: int = 32, wait_s: float = 0.0) -> EmbedCoalescer:
    return EmbedCoalescer(
        slot, lambda texts, size, truncate: embed_counted(model, texts, size, truncate=truncate), batch_size, wait_s
    )


def rows_of(texts: list[str]) -> list[list[float]]:
    return [[float(len(t)), float(ord(t[0]))] for t in texts]


def served(answer: Answer) -> Embeddings:
    assert answer.error is None, answer.error
    assert answer.embeddings is not None
    return answer.embeddings


async def held_then(model: Words, batcher: EmbedCoalescer, *requests: list[str]) -> list[Answer]:
    """A first caller holds the worker; `requests` arrive meanwhile; the gate opens; every answer, in order."""
    first = asyncio.create_task(batcher.embed(["first caller"]))
    await model.running()
    rest = [asyncio.create_task(batcher.embed(texts)) for texts in requests]
    await asyncio.sleep(0.05)  # each is handed to the slot and waits behind the first
    model.gate.set()
    return await asyncio.gather(first, *rest)


def test_callers_waiting_together_run_as_one_call_and_each_gets_its_own_rows_and_tokens() -> None:
    model, slot = Words(hold_first=True), make_slot()
    batcher = coalescer(model, slot)
    b, c, d = ["a b c", "x"], ["the quick brown fox"], ["one two", "zebra", "m n o p q"]

    answers = asyncio.run(held_then(model, batcher, b, c, d))

    assert model.calls == [["first caller"], sorted(b + c + d, key=len)], "b, c and d ran as one sorted batch"
    assert batcher.calls == 2
    for texts, answer in zip([b, c, d], answers[1:], strict=True):
        assert served(answer).vectors.tolist() == rows_of(texts), "each caller's rows, in its own order"
    tokens = [served(a).prompt_tokens for a in answers[1:]]
    assert sum(tokens) == 4 + 4 + 8, "the callers' usage adds up to the engine's count for the gathered call"
    assert served(answers[0]).prompt_tokens == 2, "a caller served alone gets the engine's exact count"
    assert slot.active == 0, "every queue place was given back"
    assert slot.requests == 4, "each caller took its own place in the slot's queue"


def test_one_callers_bad_input_fails_that_caller_only() -> None:
    model, slot = Words(hold_first=True), make_slot()
    batcher = coalescer(model, slot)
    too_long = "w " * 9
    good, bad, other = ["fine text"], ["short", too_long], ["also fine"]

    answers = asyncio.run(held_then(model, batcher, good, bad, other))

    error = answers[2].error
    assert isinstance(error, InputTooLong)
    assert error.kind is ErrorKind.CONTEXT_LENGTH
    assert error.index == 1, "the input is named as its own caller numbered it"
    assert served(answers[1]).vectors.tolist() == rows_of(good)
    assert served(answers[3]).vectors.tolist() == rows_of(other)
    assert served(answers[1]).prompt_tokens == 2, "a caller served alone after a failed gathered call: exact"


def test_out_of_memory_halves_the_gathered_batch_and_every_caller_records_it() -> None:
    model, slot = Words(fits=2, hold_first=True), make_slot()
    batcher = coalescer(model, slot, batch_size=8)
    requests = [["a b", "c"], ["d e f"], ["g"]]

    answers = asyncio.run(held_then(model, batcher, *requests))

    for texts, answer in zip(requests, answers[1:], strict=True):
        assert served(answer).vectors.tolist() == rows_of(texts)
        assert answer.halvings == [(8, 4), (4, 2)], "each caller served by the halved call records the halvings"
    assert answers[0].halvings == [], "the first caller, alone, fitted"
    assert max(len(call) for call in model.calls[-2:]) == 2


def test_a_full_queue_refuses_the_caller_and_its_texts_never_run() -> None:
    model, slot = Words(hold_first=True), make_slot(max_queue=0)
    batcher = coalescer(model, slot)

    async def scenario() -> None:
        first = asyncio.create_task(batcher.embed(["first caller"]))
        await model.running()
        with pytest.raises(InferrelayError) as refused:
            await batcher.embed(["refused"])
        assert refused.value.kind is ErrorKind.OVERLOADED
        model.gate.set()
        served(await first)

    asyncio.run(scenario())
    assert model.calls == [["first caller"]], "the refused caller's texts were withdrawn, not run later"


def test_a_caller_that_gives_up_while_pending_is_withdrawn() -> None:
    model, slot = Words(hold_first=True), make_slot()
    batcher = coalescer(model, slot)

    async def scenario() -> None:
        first = asyncio.create_task(batcher.embed(["first caller"]))
        await model.running()
        leaving = asyncio.create_task(batcher.embed(["gone"]))
        staying = asyncio.create_task(batcher.embed(["stays"]))
        await asyncio.sleep(0.05)
        leaving.cancel()
        await asyncio.sleep(0.05)
        model.gate.set()
        served(await first)
        assert served(await staying).vectors.tolist() == rows_of(["stays"])
        with pytest.raises(asyncio.CancelledError):
            await leaving

    asyncio.run(scenario())
    assert ["gone"] not in model.calls
    assert slot.active == 0


def test_after_a_gathered_call_the_next_one_waits_for_as_many_callers() -> None:
    """Callers arriving one by one, apart, are still gathered: the call waits for as many as the last one had."""
    model, slot = Words(hold_first=True), make_slot()
    batcher = coalescer(model, slot, wait_s=BOUND_S)

    async def scenario() -> None:
        await held_then(model, batcher, ["b"], ["c"], ["d"])  # a gathered call of three
        apart = []
        for text in ("e", "f", "g"):
            apart.append(asyncio.create_task(batcher.embed([text])))
            await asyncio.sleep(0.05)
        await asyncio.gather(*apart)

    asyncio.run(scenario())
    assert model.calls[-1] == ["e", "f", "g"], "the three callers that came apart ran as one call"


def test_the_slot_keeps_one_coalescer_until_it_goes() -> None:
    slot, other = make_slot(), make_slot()
    made = [coalescer(Words(), slot), coalescer(Words(), other)]
    assert coalescer_for(slot, lambda: made[0]) is coalescer_for(slot, lambda: made[1]) is made[0]
    assert coalescer_for(other, lambda: made[1]) is made[1]


def test_shares_are_exact_alone_and_add_up_to_the_engines_count() -> None:
    model = Words()
    texts = ["a b c", "d", "e f", "g h i j"]
    alone: Embedded = embed_counted(model, texts, batch_size=1)
    assert alone.shares.tolist() == [3, 1, 2, 4], "each text counted alone: its exact count"
    shared = embed_counted(model, texts, batch_size=4)
    assert shared.tokens() == pytest.approx(10), "split inside a batch, still adding up to the batch's count"
    assert shared.vectors.tolist() == rows_of(texts)


@pytest.mark.parametrize(
    ("shares", "whole"),
    [([1.5, 1.5, 1.0], [2, 1, 1]), ([3.3, 3.3, 3.4], [3, 3, 4]), ([0.2, 0.2, 0.6], [0, 0, 1]), ([4.0], [4])],
)
def test_apportion_rounds_to_whole_tokens_that_add_up(shares: list[float], whole: list[int]) -> None:
    assert apportion(shares) == whole
    assert sum(apportion(shares)) == round(sum(shares))
