"""Cancellation from the caller down to the work: a slot's call cancelled cancels the running work, a generation
stops at its next piece, a request's bounds (caller gone, deadline) cancel its task, a cancelled remote request
gives its provider place back, and a large embeddings request is served a batch at a time. Every wait on a
thread is bounded."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inferrelay import cancellation
from inferrelay.cancellation import Cancellation, Cancelled
from inferrelay.config.providers import RemoteProvider
from inferrelay.config.schema import ModelSpec, Settings
from inferrelay.engines.base import Embeddings, GenerationRequest, Piece, TextModel
from inferrelay.engines.decoding import InputTooLong
from inferrelay.outcome import Served
from inferrelay.providers.remote import RemoteClient
from inferrelay.routing.coalesce import Answer
from inferrelay.routing.resolve import Step
from inferrelay.routing.router import StepRouter
from inferrelay.routing.turns import in_turns
from inferrelay.runtime.slots import UNLOADED, LoadedSlot, Placement
from inferrelay.server.bounds import CallerGone, Deadline, DeadlinePassed, bounded, within_deadline

BOUND_S = 10


def test_a_cancellation_runs_its_callbacks_once_and_late_ones_at_once() -> None:
    heard: list[str] = []
    c = Cancellation()
    c.on_set(lambda: heard.append("early"))
    forget = c.on_set(lambda: heard.append("forgotten"))
    forget()
    c.set()
    c.set()
    c.on_set(lambda: heard.append("late"))
    assert heard == ["early", "late"]
    assert c.is_set


class Endless(TextModel):
    """Pieces until closed; says when it was closed and how many it made."""

    engine_name = "endless"
    context_length = 100

    def __init__(self, cancel_after: int, cancel: Cancellation) -> None:
        self.made = 0
        self.closed = False
        self._cancel_after, self._cancel = cancel_after, cancel

    def stream(self, request: GenerationRequest) -> Iterator[Piece]:
        try:
            while True:
                self.made += 1
                if self.made == self._cancel_after:
                    self._cancel.set()  # as the reading thread does when the server says cancel
                yield Piece("x")
        finally:
            self.closed = True


def test_a_cancelled_generation_stops_at_its_next_piece_and_closes_its_stream() -> None:
    cancel = Cancellation()
    model = Endless(3, cancel)
    with cancellation.within(cancel), pytest.raises(Cancelled):
        model.generate(GenerationRequest(prompt="hi"))
    assert model.made == 3
    assert model.closed


def test_a_generation_with_no_cancellation_runs_to_its_end() -> None:
    class Three(TextModel):
        engine_name, context_length = "three", 100

        def stream(self, request: GenerationRequest) -> Iterator[Piece]:
            yield from (Piece("a"), Piece("b"), Piece("", "stop", 1, 2))

    assert Three().generate(GenerationRequest(prompt="hi")).text == "ab"


def make_slot() -> LoadedSlot:
    spec = ModelSpec(name="m", source="fake", capabilities=["chat"], engines=["fake"])  # type: ignore[list-item]
    placement = Placement("fake", "cpu", "configured", "float32", None, 0, 0.0)
    return LoadedSlot(UNLOADED, spec, placement, keep_alive=-1, max_queue=4, parallel=1)


def test_a_slot_call_whose_caller_gives_up_cancels_the_running_work_and_frees_the_slot() -> None:
    slot = make_slot()
    started, seen = threading.Event(), threading.Event()

    def work() -> str:
        started.set()
        running = cancellation.current()
        assert running is not None
        running.on_set(seen.set)
        assert seen.wait(BOUND_S), "never cancelled"
        return "stopped"

    async def scenario() -> None:
        call = asyncio.create_task(slot.call(work))
        assert await asyncio.to_thread(started.wait, BOUND_S)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert await asyncio.to_thread(seen.wait, BOUND_S)
        for _ in range(BOUND_S * 100):
            if slot.active == 0:
                break
            await asyncio.sleep(0.01)
        assert slot.active == 0

    asyncio.run(scenario())


class FakeRequest:
    """What `bounded` reads of a request: receive(), which says disconnect once `leave` is set."""

    def __init__(self) -> None:
        self.leave = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        await self.leave.wait()
        return {"type": "http.disconnect"}


async def forever(stopped: list[bool]) -> str:
    try:
        await asyncio.sleep(BOUND_S * 10)
    except asyncio.CancelledError:
        stopped.append(True)
        raise
    return "never"


def test_bounds_answer_the_work_cancel_it_when_the_caller_leaves_and_time_it_out() -> None:
    async def scenario() -> None:
        async def quick() -> str:
            return "answer"

        request = FakeRequest()
        assert await bounded(request, Deadline(None), quick()) == "answer"  # type: ignore[arg-type]

        stopped: list[bool] = []
        asyncio.get_running_loop().call_later(0.05, request.leave.set)
        with pytest.raises(CallerGone):
            await bounded(request, Deadline(None), forever(stopped))  # type: ignore[arg-type]
        assert stopped == [True]

        stopped.clear()
        with pytest.raises(DeadlinePassed) as passed:
            await bounded(FakeRequest(), Deadline(0.05), forever(stopped))  # type: ignore[arg-type]
        assert passed.value.kind.value == "timeout"
        assert stopped == [True]

    asyncio.run(scenario())


def test_a_large_embeddings_request_is_served_a_batch_at_a_time_in_the_callers_order() -> None:
    texts = [f"{'w ' * (i % 7)}{i}" for i in range(10)]
    parts: list[list[str]] = []

    async def part(batch: list[str]) -> Answer:
        parts.append(batch)
        vectors = np.array([[float(text.split()[-1])] for text in batch], dtype=np.float32)
        return Answer(Embeddings(vectors, len(batch)), halvings=[(4, 2)])

    answer = asyncio.run(in_turns(texts, 4, part))
    assert [len(p) for p in parts] == [4, 4, 2]
    assert answer.embeddings is not None
    assert answer.embeddings.vectors[:, 0].tolist() == list(range(10))  # rows back in the caller's order
    assert answer.embeddings.prompt_tokens == 10
    assert answer.halvings == [(4, 2)] * 3


def test_an_input_refused_in_a_later_batch_is_named_as_the_caller_numbered_it() -> None:
    texts = ["a", "bb", "ccc", "dddd", "eeeee"]  # sorted already: the batches are [a, bb] [ccc, dddd] [eeeee]

    async def part(batch: list[str]) -> Answer:
        if "dddd" in batch:
            return Answer(error=InputTooLong(batch.index("dddd"), 999, 256))
        return Answer(Embeddings(np.zeros((len(batch), 1), dtype=np.float32), 1))

    answer = asyncio.run(in_turns(texts, 2, part))
    assert isinstance(answer.error, InputTooLong)
    assert answer.error.index == 3


def test_a_cancelled_remote_request_gives_back_its_place_and_is_no_failure_of_the_provider(tmp_path: Path) -> None:
    capped = RemoteProvider(type="vllm", base_url="http://127.0.0.1:9/v1", max_in_flight=1)
    router = StepRouter(Settings(models=[], home=tmp_path, providers={"capped": capped}))
    started = asyncio.Event()

    async def local(spec: ModelSpec) -> Served[str]:
        raise AssertionError("no local step")

    async def remote(client: RemoteClient, model: str) -> str:
        started.set()
        await asyncio.sleep(BOUND_S * 10)
        return "never"

    async def scenario() -> None:
        request = asyncio.create_task(router.serve("m", [Step("capped", "m")], local, remote))
        await asyncio.wait_for(started.wait(), BOUND_S)
        assert router.book["capped"].in_flight == 1
        request.cancel()  # as a caller gone, or a deadline passed, cancels it
        with pytest.raises(asyncio.CancelledError):
            await request
        await router.aclose()

    asyncio.run(scenario())
    assert router.book["capped"].in_flight == 0
    assert router.book["capped"].failures == 0


def test_a_stream_past_its_deadline_gives_what_came_in_time_then_the_deadline_error() -> None:
    async def slow() -> AsyncIterator[str]:
        yield "first"
        await asyncio.sleep(BOUND_S)
        yield "too late"

    got: list[str] = []

    async def scenario() -> None:
        async for event in within_deadline(slow(), Deadline(0.1)):
            got.append(event)

    with pytest.raises(DeadlinePassed):
        asyncio.run(scenario())
    assert got == ["first"]
