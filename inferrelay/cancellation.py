"""A call's cancellation, as the thread running it sees it: its caller went away, or its deadline passed.

The runtime gives each call it runs on a model's thread one (runtime/slots.py), and an engine worker process
each call it serves (runtime/worker_main.py). Long work checks it between steps (a decoded piece) and stops; a
call waiting on a worker process passes it on to the worker as a cancel message (runtime/workers.py).
Thread-local, because engines run on plain threads; none set: nothing is ever cancelled (batch jobs).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from inferrelay.errors import ErrorKind, InferrelayError


class Cancelled(InferrelayError):
    """Raised in the cancelled call only: its caller is gone (or has its timeout answer already)."""

    def __init__(self) -> None:
        super().__init__(ErrorKind.TIMEOUT, "the call was cancelled: its caller went away or its deadline passed")


class Cancellation:
    """Set once, from any thread; callbacks registered before or after run exactly once when it is."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._set = False
        self._callbacks: list[Callable[[], None]] = []

    @property
    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        with self._lock:
            if self._set:
                return
            self._set = True
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()

    def on_set(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Run `callback` when this is set (at once if it is); returns what unregisters it."""
        with self._lock:
            if not self._set:
                self._callbacks.append(callback)
                return lambda: self._forget(callback)
        callback()
        return lambda: None

    def _forget(self, callback: Callable[[], None]) -> None:
        with self._lock:
            if callback in self._callbacks:
                self._callbacks.remove(callback)


_local = threading.local()


def current() -> Cancellation | None:
    found: Cancellation | None = getattr(_local, "cancellation", None)
    return found


@contextmanager
def within(cancellation: Cancellation) -> Iterator[None]:
    """The calling thread runs a call that `cancellation` may stop."""
    before = current()
    _local.cancellation = cancellation
    try:
        yield
    finally:
        _local.cancellation = before


def check() -> None:
    """Raise Cancelled where the running call was cancelled; between two steps of long work."""
    cancellation = current()
    if cancellation is not None and cancellation.is_set:
        raise Cancelled()


@contextmanager
def forwarded(callback: Callable[[], None]) -> Iterator[None]:
    """While the block runs, a cancellation of the running call also runs `callback` (tells a worker process)."""
    cancellation = current()
    if cancellation is None:
        yield
        return
    forget = cancellation.on_set(callback)
    try:
        yield
    finally:
        forget()
