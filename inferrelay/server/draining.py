"""SIGTERM drains instead of cutting: GET /ready turns false at once, new requests are still taken for
`runtime.drain_grace` (so a load balancer polling /ready stops sending), then uvicorn's own shutdown runs:
no new connections, running requests finish (for at most `runtime.drain_timeout`), then the process exits."""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable
from types import FrameType

from fastapi import FastAPI


def drain_on_sigterm(app: FastAPI, grace_s: float) -> Callable[[], None]:
    """Put the drain in front of the SIGTERM handler there is (uvicorn's); returns what puts it back."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None  # signals reach only the main thread: an app run in a test's thread drains nothing
    loop = asyncio.get_running_loop()
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(sig: int, frame: FrameType | None) -> None:
        app.state.serving = False
        if callable(previous):
            loop.call_soon_threadsafe(loop.call_later, max(grace_s, 0.0), previous, sig, frame)

    signal.signal(signal.SIGTERM, on_term)

    def restore() -> None:
        signal.signal(signal.SIGTERM, previous)

    return restore
