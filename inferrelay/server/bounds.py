"""A request's bounds: its caller still listening, and its time budget (`request_timeout`).

A request whose caller closes the connection, or whose budget passes, is
cancelled where it is: the task serving it is cancelled, which cancels its
place in a model's queue or its call on the model (runtime/slots.py), down to
the engine worker, which stops at its next decoded piece. Streams are bounded
by the same deadline between events; their disconnects are seen by the
streaming response (openai_routes.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from fastapi import Request
from fastapi.responses import Response

from inferrelay.access import caller
from inferrelay.config.schema import Settings
from inferrelay.errors import ErrorKind, InferrelayError
from inferrelay.observe.requests import CLIENT_CLOSED
from inferrelay.runtime.catalog import ModelCatalog

T = TypeVar("T")


class CallerGone(Exception):
    """The caller closed its connection before its answer was ready."""


def gone_response() -> Response:
    """What a request whose caller went away answers: nobody reads it, the logs and metrics do."""
    return Response(status_code=CLIENT_CLOSED)


def budget_s(settings: Settings, catalog: ModelCatalog, model: str) -> float | None:
    """The time budget of a request naming `model`: the local model's own request_timeout, else the runtime's,
    capped by the caller's key's request_timeout when it has one; None: unbounded."""
    spec = catalog.get(model)
    chosen = spec.request_timeout if spec is not None and spec.request_timeout is not None else None
    if chosen is None:
        chosen = settings.runtime.request_timeout
    key = caller.current.get()
    if key is not None and key.request_timeout is not None:
        chosen = key.request_timeout if chosen <= 0 else min(chosen, key.request_timeout)
    return chosen if chosen > 0 else None


class DeadlinePassed(InferrelayError):
    """Kind timeout, raised where the request's own budget ran out (not a backend's timeout)."""


class Deadline:
    """When a request's budget runs out (monotonic seconds), and how to say so."""

    def __init__(self, budget: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.budget = budget
        self._clock = clock
        self.at = None if budget is None else clock() + budget

    def left(self) -> float | None:
        return None if self.at is None else max(0.0, self.at - self._clock())

    def error(self) -> DeadlinePassed:
        return DeadlinePassed(
            ErrorKind.TIMEOUT,
            f"the request ran past its time budget of {self.budget:g}s (request_timeout) and was stopped",
            hint="Raise request_timeout (runtime, or the model's own), or ask for less (max_tokens, fewer inputs).",
        )


async def bounded(request: Request, deadline: Deadline, work: Awaitable[T]) -> T:
    """`work`'s result; CallerGone when the caller disconnects first, the deadline's error when it passes first.
    Either way `work` is cancelled, and awaited, before this returns: its model is free again."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait((task, gone), timeout=deadline.left(), return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # this request's own task cancelled (the server stopping): the work goes too
        done = set()
        raise
    finally:
        gone.cancel()
        if task not in done:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
    if task in done:
        return task.result()
    if gone in done:
        raise CallerGone
    raise deadline.error()


async def _disconnected(request: Request) -> None:
    """Returns when the ASGI server says the client went away (the request body was read already)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def within_deadline(events: AsyncIterator[str], deadline: Deadline) -> AsyncIterator[str]:
    """A stream's events until the deadline; past it, the deadline's error (the route sends it as an SSE error
    event, and closing the stream stops its generation)."""
    while True:
        try:
            event = await _next_within(events, deadline.left())
        except StopAsyncIteration:
            return
        except asyncio.TimeoutError:
            raise deadline.error() from None
        yield event


async def _next_within(events: AsyncIterator[str], seconds: float | None) -> str:
    """The next event, or asyncio.TimeoutError after `seconds`; without a task per event where Python allows."""
    if sys.version_info >= (3, 11):
        async with asyncio.timeout(seconds):
            return await anext(events)
    return await asyncio.wait_for(anext(events), seconds)
