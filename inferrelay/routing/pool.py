"""Loaded models, one per (model, engine), each driven by its own worker thread.

Engines are blocking and most are not thread-safe, so every call to one
loaded model runs on that model's single worker thread; the event loop only
awaits. Streams run there too and hand pieces to the loop through a queue.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncGenerator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from inferrelay.config.schema import ModelSpec
from inferrelay.engines.base import Engine, LoadedModel
from inferrelay.errors import InferrelayError, classify

T = TypeVar("T")
_END = object()


class LoadedSlot:
    def __init__(self, model: LoadedModel, label: str) -> None:
        self.model = model
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix=label)

    async def call(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._worker, fn)

    def stream(self, produce: Callable[[], Iterator[T]]) -> AsyncGenerator[T, None]:
        """Run `produce` on the worker; items (or its exception) arrive in order."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        cancelled = threading.Event()

        def pump() -> None:
            try:
                for item in produce():
                    if cancelled.is_set():
                        break
                    loop.call_soon_threadsafe(queue.put_nowait, item)
            except BaseException as exc:  # handed to the consumer, not lost in the thread
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            loop.call_soon_threadsafe(queue.put_nowait, _END)

        self._worker.submit(pump)

        async def consume() -> AsyncGenerator[T, None]:
            try:
                while (item := await queue.get()) is not _END:
                    if isinstance(item, BaseException):
                        raise item
                    yield item  # type: ignore[misc]
            finally:
                cancelled.set()

        return consume()

    def close(self) -> None:
        self._worker.submit(self.model.close)
        self._worker.shutdown(wait=True)


class ModelPool:
    """Loads on first use and keeps models loaded; a failed load is remembered for a while."""

    def __init__(self, home: Path, retry_after_s: float) -> None:
        self._home = home
        self._retry_after_s = retry_after_s
        self._slots: dict[tuple[str, str], LoadedSlot] = {}
        self._failed: dict[tuple[str, str], tuple[float, InferrelayError]] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    async def slot(self, spec: ModelSpec, engine: Engine) -> LoadedSlot:
        key = (spec.name, engine.name)
        if key in self._slots:
            return self._slots[key]
        async with self._locks.setdefault(key, asyncio.Lock()):
            if key in self._slots:
                return self._slots[key]
            failed = self._failed.get(key)
            if failed and time.monotonic() - failed[0] < self._retry_after_s:
                raise failed[1]
            try:
                model = await asyncio.to_thread(engine.load, spec, spec.device, self._home)
            except Exception as exc:
                error = classify(exc, loading=True)
                self._failed[key] = (time.monotonic(), error)
                raise error from exc
            self._failed.pop(key, None)
            self._slots[key] = LoadedSlot(model, f"{engine.name}-{spec.name}")
            return self._slots[key]

    def loaded(self) -> list[tuple[str, str]]:
        return list(self._slots)

    def close(self) -> None:
        for slot in self._slots.values():
            slot.close()
        self._slots.clear()
