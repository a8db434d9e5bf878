"""An asyncio loop in a daemon thread, so a synchronous engine contract can drive an async engine (vLLM's AsyncLLM).

`iterate` turns an async generator running on that loop into a plain iterator:
items cross through a bounded queue, an exception is raised in the caller,
and a caller that stops early (a client gone) cancels the generator there.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")
_END = object()


class LoopThread:
    def __init__(self, name: str = "async-engine") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def iterate(
        self, items: AsyncIterator[T], on_abandon: Callable[[], Coroutine[Any, Any, Any]] | None = None
    ) -> Iterator[T]:
        """Each item as the loop produces it; closing the iterator early cancels `items` and awaits `on_abandon`."""
        handoff: queue.Queue[Any] = queue.Queue(maxsize=64)

        async def pump() -> None:
            try:
                async for item in items:
                    await asyncio.to_thread(handoff.put, item)
            except BaseException as exc:  # delivered to the caller, cancellation included
                handoff.put(exc)
                raise
            handoff.put(_END)

        future = asyncio.run_coroutine_threadsafe(pump(), self.loop)
        finished = False
        try:
            while True:
                item = handoff.get()
                if item is _END:
                    finished = True
                    return
                if isinstance(item, BaseException):
                    finished = True
                    raise item
                yield item
        finally:
            if not finished:
                future.cancel()
                while not handoff.empty():  # unblocks a put waiting on a full queue
                    handoff.get_nowait()
                if on_abandon is not None:
                    self.run(on_abandon(), timeout=30)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
