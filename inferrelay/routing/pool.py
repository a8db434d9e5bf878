"""Loaded models, one per (model, engine), each driven by its own worker thread.

Engines are blocking and most are not thread-safe, so every call to one
loaded model runs on that model's single worker thread; the event loop only
awaits. Streams run there too and hand pieces to the loop through a queue.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from inferrelay.config.schema import ModelSpec
from inferrelay.engines.base import Engine, LoadedModel
from inferrelay.errors import ErrorKind, InferrelayError, classify

T = TypeVar("T")
_END = object()


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


class LoadedSlot:
    def __init__(self, model: LoadedModel, label: str) -> None:
        self.model = model
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix=label)

    async def call(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._worker, fn)

    def stream(self, produce: Callable[[], Iterator[T]]) -> WorkerStream[T]:
        """Run `produce` on the worker; items (or its exception) arrive in order."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        cancelled = threading.Event()

        def pump() -> None:
            items = produce()
            try:
                for item in items:
                    loop.call_soon_threadsafe(queue.put_nowait, item)
                    if cancelled.is_set():
                        break
            except BaseException as exc:  # handed to the consumer, not lost in the thread
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            finally:
                close = getattr(items, "close", None)
                if close is not None:
                    close()
            loop.call_soon_threadsafe(queue.put_nowait, _END)

        self._worker.submit(pump)
        return WorkerStream(queue, cancelled)

    def close(self) -> None:
        self._worker.submit(self.model.close)
        self._worker.shutdown(wait=True)


@dataclass(frozen=True)
class LoadFailure:
    at: float
    kind: ErrorKind
    message: str
    hint: str


class RememberedLoadFailure(InferrelayError):
    """A load that failed recently, answered from memory instead of loading again."""

    def __init__(self, failure: LoadFailure) -> None:
        super().__init__(failure.kind, f"{failure.message} (remembered)", hint=failure.hint)
        self.failed_at = failure.at


class ModelPool:
    """Loads on first use and keeps models loaded; a failed load is remembered for a while.

    One load runs per (model, engine) however many requests wait for it, and a
    request that goes away does not abandon a half-finished load.
    """

    def __init__(self, home: Path, retry_after_s: float) -> None:
        self._home = home
        self._retry_after_s = retry_after_s
        self._slots: dict[tuple[str, str], LoadedSlot] = {}
        self._failed: dict[tuple[str, str], LoadFailure] = {}
        self._loading: dict[tuple[str, str], asyncio.Task[LoadedSlot]] = {}

    async def slot(self, spec: ModelSpec, engine: Engine, *, retry_now: bool = False) -> LoadedSlot:
        key = (spec.name, engine.name)
        if key in self._slots:
            return self._slots[key]
        failure = self._failed.get(key)
        if failure and not retry_now and time.monotonic() - failure.at < self._retry_after_s:
            raise RememberedLoadFailure(failure)
        task = self._loading.get(key)
        if task is None:
            task = asyncio.create_task(self._load(key, spec, engine))
            self._loading[key] = task
        return await asyncio.shield(task)

    async def _load(self, key: tuple[str, str], spec: ModelSpec, engine: Engine) -> LoadedSlot:
        try:
            model = await asyncio.to_thread(engine.load, spec, spec.device, self._home)
        except Exception as exc:
            error = classify(exc, loading=True)
            self._failed[key] = LoadFailure(time.monotonic(), error.kind, error.message, error.hint)
            raise error from exc
        finally:
            self._loading.pop(key, None)
        self._failed.pop(key, None)
        self._slots[key] = LoadedSlot(model, f"{engine.name}-{spec.name}")
        return self._slots[key]

    def close(self) -> None:
        for slot in self._slots.values():
            slot.close()
        self._slots.clear()
