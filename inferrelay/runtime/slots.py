"""One loaded model: its worker thread, and what the runtime knows of its use.

Engines are blocking and most are not thread-safe, so every call to one
loaded model runs on that model's single worker thread; the event loop only
awaits. Streams run there too and hand pieces to the loop through a queue.
A model is busy from the moment a call or stream is handed to it until its
worker has finished it, which is what keeps it safe from eviction.
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

from inferrelay.config.schema import ModelSpec
from inferrelay.engines.base import LoadedModel, utcnow
from inferrelay.errors import ErrorKind, InferrelayError
from inferrelay.runtime.memory import MemoryEstimate
from inferrelay.runtime.workers import describe_worker

T = TypeVar("T")
_END = object()


class _Unloaded(LoadedModel):
    engine_name = "unloaded"


UNLOADED = _Unloaded()


class WorkerStream(Generic[T]):
    """Items produced on a worker thread, read on the loop; `aclose` stops the producer."""

    def __init__(self, queue: asyncio.Queue[object], cancelled: threading.Event) -> None:
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

    @property
    def charged_bytes(self) -> int:
        """What the budget counts: the larger of estimate and measurement (mapped pages grow with use)."""
        return max(self.held_bytes, self.estimate.total if self.estimate else 0)


class LoadedSlot:
    def __init__(
        self,
        model: LoadedModel,
        spec: ModelSpec,
        placement: Placement,
        keep_alive: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.model = model
        self._clock = clock
        self.spec = spec
        self.placement = placement
        self.keep_alive = keep_alive
        self.active = 0
        self.requests = 0
        self.last_used = clock()
        self.last_used_at = utcnow()
        self.on_idle: Callable[[LoadedSlot], None] = lambda slot: None
        self.closed = False
        self.restarts = 0  # worker processes started again for this model and engine after a crash
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{placement.engine}-{spec.name}")

    @property
    def pinned(self) -> bool:
        return self.spec.pinned

    def idle_for(self, now: float) -> float:
        return 0.0 if self.active else now - self.last_used

    def expired(self, now: float) -> bool:
        """Idle past its keep_alive (a negative keep_alive never expires)."""
        return self.active == 0 and self.keep_alive >= 0 and self.idle_for(now) >= self.keep_alive

    def _begin(self) -> None:
        self.active += 1
        self.requests += 1

    def _end(self) -> None:
        self.active -= 1
        self.last_used, self.last_used_at = self._clock(), utcnow()
        if self.active == 0 and not self.closed:
            self.on_idle(self)

    def _unloaded(self) -> InferrelayError:
        return InferrelayError(ErrorKind.TRANSIENT, f"{self.spec.name} was unloaded as the request reached it")

    async def call(self, fn: Callable[[], T]) -> T:
        if self.closed:
            raise self._unloaded()
        self._begin()
        try:
            return await asyncio.get_running_loop().run_in_executor(self._worker, fn)
        finally:
            self._end()

    def stream(self, produce: Callable[[], Iterator[T]]) -> WorkerStream[T]:
        """Run `produce` on the worker; items (or its exception) arrive in order."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        cancelled = threading.Event()

        def pump() -> None:
            try:
                items = produce()
                try:
                    for item in items:
                        loop.call_soon_threadsafe(queue.put_nowait, item)
                        if cancelled.is_set():
                            break
                finally:
                    close = getattr(items, "close", None)
                    if close is not None:
                        close()
            except BaseException as exc:  # handed to the consumer, not lost in the thread
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, _END)
                loop.call_soon_threadsafe(self._end)

        if self.closed:
            raise self._unloaded()
        self._begin()
        self._worker.submit(pump)
        return WorkerStream(queue, cancelled)

    def close(self) -> None:
        """Blocks until the requests handed to the worker are done, then frees the model."""
        if self.closed:
            return
        self.closed = True
        self._worker.submit(self.model.close)
        self._worker.shutdown(wait=True)
        self.model = UNLOADED  # the slot's reference was the engine objects' last: now they can be freed

    def describe(self, now: float) -> dict[str, Any]:
        placement = self.placement
        deadline = None
        if self.active == 0 and self.keep_alive >= 0:
            deadline = (self.last_used_at + timedelta(seconds=self.keep_alive)).isoformat()
        return {
            "state": "loaded",
            "engine": placement.engine,
            "device": placement.device,
            "device_reason": placement.device_reason,
            "dtype": placement.dtype,
            "memory": {
                "estimated": placement.estimate.as_dict() if placement.estimate else None,
                "measured_bytes": placement.held_bytes,
                "charged_bytes": placement.charged_bytes,
            },
            "loaded_at": placement.loaded_at.isoformat(),
            "load_seconds": round(placement.load_seconds, 3),
            "requests": self.requests,
            "active": self.active,
            "last_used": self.last_used_at.isoformat(),
            "keep_alive_s": self.keep_alive,
            "keep_alive_deadline": deadline,
            "pinned": self.pinned,
            "worker": describe_worker(self.model, self.restarts),
        }
