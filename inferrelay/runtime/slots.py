"""One loaded model: its worker threads, its bounded queue, and what the runtime knows of its use.

Engines are blocking and most are not thread-safe, so calls to one loaded
model run on that model's own worker threads (`parallel` of them, 1 until an
engine batches concurrent calls); the event loop only awaits. Streams run
there too and hand pieces to the loop through a queue. A request handed to a
model waits until a worker takes it, then runs; at most `parallel` run and
`max_queue` wait, and one more is refused at once (kind `overloaded`) rather
than queued without end. A model is busy from the moment a request is handed
to it until its worker has finished it, which keeps it safe from eviction.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from inferrelay.cancellation import Cancellation, within
from inferrelay.config.runtime import DEFAULT_MAX_QUEUE
from inferrelay.config.schema import ModelSpec
from inferrelay.engines.base import LoadedModel, utcnow
from inferrelay.errors import ErrorKind, InferrelayError
from inferrelay.runtime.memory import MemoryEstimate
from inferrelay.runtime.workers import describe_worker

T = TypeVar("T")
_END = object()
OVERLOADED_RETRY_AFTER_S = 1.0
"""What a refusal for a full queue tells the caller to wait: a queued request usually takes about that long."""


class _Unloaded(LoadedModel):
    engine_name = "unloaded"


UNLOADED = _Unloaded()


class WorkerStream(Generic[T]):
    """Items produced on a worker thread, read on the loop; `aclose` stops the producer."""

    def __init__(self, queue: asyncio.Queue[object], cancelled: Cancellation) -> None:
        self._queue = queue
        self._cancelled = cancelled

    def __aiter__(self) -> WorkerStream[T]:
        return self

    async def __anext__(self) -> T:
        item = await self._queue.get()
        if item is _END:
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            raise item
        return item  # type: ignore[return-value]

    async def aclose(self) -> None:
        self._cancelled.set()


@dataclass
class Placement:
    """Where and how a model was loaded, and what it was expected to hold and did hold."""

    engine: str
    device: str
    device_reason: str
    dtype: str
    estimate: MemoryEstimate | None
    held_bytes: int
    load_seconds: float
    loaded_at: datetime = field(default_factory=utcnow)
    configured: tuple[str, str] | None = None
    """(device, dtype) the model's configuration asks for; a remedied load holds another (runtime/remediation.py)."""

    @property
    def remedied(self) -> bool:
        """Loaded on another device or in another precision than configured (the out-of-memory ladder's doing)."""
        return self.configured is not None and self.configured != (self.device, self.dtype)

    @property
    def charged_bytes(self) -> int:
        """What the budget counts: the larger of estimate and measurement (mapped pages grow with use)."""
        return max(self.held_bytes, self.estimate.total if self.estimate else 0)


class _Ticket:
    """One request handed to a slot: it waits until a worker takes it, unless its caller gives up first; a caller
    that gives up while it runs cancels it (its work stops at its next step, cancellation.py)."""

    __slots__ = ("cancellation", "dropped", "started")

    def __init__(self) -> None:
        self.started = False
        self.dropped = False
        self.cancellation = Cancellation()


class LoadedSlot:
    def __init__(
        self,
        model: LoadedModel,
        spec: ModelSpec,
        placement: Placement,
        keep_alive: float,
        clock: Callable[[], float] = time.monotonic,
        *,
        max_queue: int = DEFAULT_MAX_QUEUE,
        parallel: int = 1,
    ) -> None:
        self.model = model
        self._clock = clock
        self.spec = spec
        self.placement = placement
        self.keep_alive = keep_alive
        self.max_queue = max_queue
        self.parallel = parallel  # requests run at once: the model's own (a batching engine decodes them together)
        self.waiting = 0
        self.running = 0
        self.batches = 0  # calls that served several gathered requests at once (dynamic batching of embeddings)
        self.batched_requests = 0  # the requests those calls served
        self._counts = threading.Lock()  # waiting and running move on the loop and on the worker threads
        self.requests = 0
        self.last_used = clock()
        self.last_used_at = utcnow()
        self.on_idle: Callable[[LoadedSlot], None] = lambda slot: None
        self.closed = False
        self.restarts = 0  # worker processes started again for this model and engine after a crash
        self._worker = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix=f"{placement.engine}-{spec.name}")

    @property
    def pinned(self) -> bool:
        return self.spec.pinned

    @property
    def active(self) -> int:
        """Requests handed to the model and not finished: waiting or running."""
        return self.waiting + self.running

    @property
    def full(self) -> bool:
        """No room for one more request: `parallel` may run and `max_queue` wait."""
        return self.active >= self.parallel + self.max_queue

    def idle_for(self, now: float) -> float:
        return 0.0 if self.active else now - self.last_used

    def expired(self, now: float) -> bool:
        """Idle past its keep_alive (a negative keep_alive never expires)."""
        return self.active == 0 and self.keep_alive >= 0 and self.idle_for(now) >= self.keep_alive

    def _admit(self) -> _Ticket:
        """On the loop: the request joins the queue, or is refused at once when the queue is full."""
        if self.closed:
            raise self._unloaded()
        with self._counts:
            if self.full:
                raise self._overloaded()
            self.waiting += 1
            self.requests += 1
        return _Ticket()

    def _run(self, ticket: _Ticket, work: Callable[[], T], loop: asyncio.AbstractEventLoop) -> T:
        """On a worker thread: the request leaves the queue and runs (unless its caller gave up waiting)."""
        with self._counts:
            if ticket.dropped:
                raise asyncio.CancelledError  # nobody awaits it any more
            ticket.started = True
            self.waiting, self.running = self.waiting - 1, self.running + 1
        try:
            with within(ticket.cancellation):
                return work()
        finally:
            with self._counts:
                self.running -= 1
                self.last_used, self.last_used_at = self._clock(), utcnow()
            loop.call_soon_threadsafe(self._settled)

    def _drop(self, ticket: _Ticket) -> None:
        """On the loop, when a call ends: one whose caller went away before a worker took it leaves the queue."""
        with self._counts:
            if ticket.started or ticket.dropped:
                return
            ticket.dropped = True
            self.waiting -= 1
        self._settled()

    def _settled(self) -> None:
        if self.active == 0 and not self.closed:
            self.on_idle(self)

    def _unloaded(self) -> InferrelayError:
        return InferrelayError(ErrorKind.TRANSIENT, f"{self.spec.name} was unloaded as the request reached it")

    def _overloaded(self) -> InferrelayError:
        return InferrelayError(
            ErrorKind.OVERLOADED,
            f"{self.spec.name} on {self.placement.engine} is full: {self.running} running, {self.waiting} waiting "
            f"(parallel {self.parallel}, max_queue {self.max_queue})",
            retry_after=OVERLOADED_RETRY_AFTER_S,
        )

    async def call(self, fn: Callable[[], T]) -> T:
        ticket = self._admit()
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._worker, self._run, ticket, fn, loop)
        except asyncio.CancelledError:  # the caller went away or its deadline passed: the work stops too
            ticket.cancellation.set()
            raise
        finally:
            self._drop(ticket)

    def stream(self, produce: Callable[[], Iterator[T]]) -> WorkerStream[T]:
        """Run `produce` on a worker; items (or its exception) arrive in order. Closing the stream cancels its call:
        a producer that waits on a worker process passes that on at once (runtime/workers.py)."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        ticket = self._admit()
        cancelled = ticket.cancellation

        def pump() -> None:
            if cancelled.is_set:  # closed while it waited: nothing to make
                return
            try:
                items = produce()
                try:
                    for item in items:
                        loop.call_soon_threadsafe(queue.put_nowait, item)
                        if cancelled.is_set:
                            break
                finally:
                    close = getattr(items, "close", None)
                    if close is not None:
                        close()
            except BaseException as exc:  # handed to the consumer, not lost in the thread
                loop.call_soon_threadsafe(queue.put_nowait, exc)

        def run_then_end(ticket: _Ticket) -> None:
            try:
                self._run(ticket, pump, loop)
            finally:  # after the counts: a consumer that sees the end sees the model free
                loop.call_soon_threadsafe(queue.put_nowait, _END)

        self._worker.submit(run_then_end, ticket)
        return WorkerStream(queue, cancelled)

    def close(self) -> None:
        """Blocks until the requests handed to the worker are done, then frees the model."""
        if self.closed:
            return
        self.closed = True
        self._worker.submit(self.model.close)
        self._worker.shutdown(wait=True)
        self.model = UNLOADED  # the slot's reference was the engine objects' last: now they can be freed

    def queue(self) -> dict[str, Any]:
        """Its queue as /ready, the stats and the metrics show it."""
        return {
            "waiting": self.waiting,
            "running": self.running,
            "max_queue": self.max_queue,
            "parallel": self.parallel,
            "batches": self.batches,
            "batched_requests": self.batched_requests,
        }

    def describe(self, now: float) -> dict[str, Any]:
        placement = self.placement
        configured = placement.configured or (placement.device, placement.dtype)
        deadline = None
        if self.active == 0 and self.keep_alive >= 0:
            deadline = (self.last_used_at + timedelta(seconds=self.keep_alive)).isoformat()
        return {
            "state": "loaded",
            "engine": placement.engine,
            "device": placement.device,
            "device_reason": placement.device_reason,
            "dtype": placement.dtype,
            "configured": {"device": configured[0], "dtype": configured[1]},
            "remedied": placement.remedied,
            "memory": {
                "estimated": placement.estimate.as_dict() if placement.estimate else None,
                "measured_bytes": placement.held_bytes,
                "charged_bytes": placement.charged_bytes,
            },
            "loaded_at": placement.loaded_at.isoformat(),
            "load_seconds": round(placement.load_seconds, 3),
            "requests": self.requests,
            "active": self.active,
            **self.queue(),
            "last_used": self.last_used_at.isoformat(),
            "keep_alive_s": self.keep_alive,
            "keep_alive_deadline": deadline,
            "pinned": self.pinned,
            "worker": describe_worker(self.model, self.restarts),
        }
