"""A loaded model's bounded queue: at most `parallel` requests run and `max_queue` wait; one more is refused at once.

Work here is a gate the test opens, so what is running and what is waiting is
known exactly; every wait on a thread is bounded.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from inferrelay.config.schema import ModelSpec
from inferrelay.errors import ErrorKind, InferrelayError
from inferrelay.runtime.slots import UNLOADED, LoadedSlot, Placement

BOUND_S = 10


class Gate:
    """Work that holds its worker thread until the test opens it, and says when it started."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.open = threading.Event()

    def __call__(self) -> str:
        self.started.set()
        if not self.open.wait(BOUND_S):
            raise TimeoutError("the gate was never opened")
        return "done"

    async def running(self) -> None:
        assert await asyncio.to_thread(self.started.wait, BOUND_S), "the work never started"


def make_slot(max_queue: int, parallel: int = 1) -> LoadedSlot:
    spec = ModelSpec(name="m", source="fake", capabilities=["chat"], engines=["fake"])  # type: ignore[list-item]
    placement = Placement("fake", "cpu", "configured", "float32", None, 0, 0.0)
    return LoadedSlot(UNLOADED, spec, placement, keep_alive=-1, max_queue=max_queue, parallel=parallel)


def counts(slot: LoadedSlot) -> tuple[int, int]:
    return slot.running, slot.waiting


def test_one_runs_one_waits_and_the_next_is_refused_at_once() -> None:
    slot = make_slot(max_queue=1)
    idle: list[LoadedSlot] = []
    slot.on_idle = idle.append

    async def scenario() -> None:
        first, second = Gate(), Gate()
        a = asyncio.create_task(slot.call(first))
        await first.running()
        b = asyncio.create_task(slot.call(second))
        await asyncio.sleep(0)  # b is handed to the slot and waits behind a
        assert counts(slot) == (1, 1)
        assert slot.full
        with pytest.raises(InferrelayError) as refused:
            await slot.call(lambda: "never")
        assert refused.value.kind is ErrorKind.OVERLOADED
        assert refused.value.retry_after == 1.0
        assert "1 running, 1 waiting" in refused.value.message
        with pytest.raises(InferrelayError) as refused_stream:
            slot.stream(lambda: iter(["never"]))
        assert refused_stream.value.kind is ErrorKind.OVERLOADED
        assert counts(slot) == (1, 1), "a refusal takes no place in the queue"
        first.open.set()
        await second.running()
        assert counts(slot) == (1, 0)
        assert not slot.full
        second.open.set()
        assert await asyncio.gather(a, b) == ["done", "done"]

    asyncio.run(scenario())
    assert counts(slot) == (0, 0)
    assert slot.requests == 2, "refused requests are not counted as served"
    assert idle == [slot], "idle once, when the last request finished"
    slot.close()


def test_a_caller_that_gives_up_while_waiting_leaves_the_queue_and_its_work_never_runs() -> None:
    slot = make_slot(max_queue=2)
    ran: list[int] = []

    async def scenario() -> None:
        gate = Gate()
        a = asyncio.create_task(slot.call(gate))
        await gate.running()
        b = asyncio.create_task(slot.call(lambda: ran.append(1)))
        await asyncio.sleep(0)
        assert counts(slot) == (1, 1)
        b.cancel()
        with pytest.raises(asyncio.CancelledError):
            await b
        assert counts(slot) == (1, 0)
        gate.open.set()
        assert await a == "done"
        assert await slot.call(lambda: "after") == "after"  # the worker has passed where b stood

    asyncio.run(scenario())
    assert ran == []
    assert counts(slot) == (0, 0)
    slot.close()


def test_no_queue_at_all_takes_only_what_runs() -> None:
    slot = make_slot(max_queue=0)

    async def scenario() -> None:
        gate = Gate()
        a = asyncio.create_task(slot.call(gate))
        await gate.running()
        with pytest.raises(InferrelayError) as refused:
            await slot.call(lambda: "never")
        assert refused.value.kind is ErrorKind.OVERLOADED
        gate.open.set()
        await a
        assert await slot.call(lambda: "free again") == "free again"

    asyncio.run(scenario())
    slot.close()


def test_a_stream_waits_its_turn_and_the_model_is_free_when_its_end_arrives() -> None:
    slot = make_slot(max_queue=1)

    def pieces() -> Iterator[str]:
        yield from ("a", "b", "c")

    async def scenario() -> list[str]:
        gate = Gate()
        a = asyncio.create_task(slot.call(gate))
        await gate.running()
        stream = slot.stream(pieces)
        assert counts(slot) == (1, 1)
        gate.open.set()
        got = [piece async for piece in stream]
        assert counts(slot) == (0, 0), "the end of a stream comes after the model is free"
        await a
        return got

    assert asyncio.run(scenario()) == ["a", "b", "c"]
    assert slot.requests == 2
    slot.close()


def test_parallel_calls_run_at_once_and_the_queue_bounds_the_rest() -> None:
    """How a slot counts once an engine lets it run several calls at once: running <= parallel, waiting <= max_queue."""
    slot = make_slot(max_queue=1, parallel=2)

    async def scenario() -> None:
        gates = [Gate(), Gate(), Gate()]
        tasks = [asyncio.create_task(slot.call(gates[0])), asyncio.create_task(slot.call(gates[1]))]
        await gates[0].running()
        await gates[1].running()
        tasks.append(asyncio.create_task(slot.call(gates[2])))
        await asyncio.sleep(0)
        assert counts(slot) == (2, 1)
        assert slot.queue() == {
            "waiting": 1,
            "running": 2,
            "max_queue": 1,
            "parallel": 2,
            "batches": 0,
            "batched_requests": 0,
        }
        with pytest.raises(InferrelayError) as refused:
            await slot.call(lambda: "never")
        assert refused.value.kind is ErrorKind.OVERLOADED
        for gate in gates:
            gate.open.set()
        assert await asyncio.gather(*tasks) == ["done"] * 3

    asyncio.run(scenario())
    assert counts(slot) == (0, 0)
    slot.close()
