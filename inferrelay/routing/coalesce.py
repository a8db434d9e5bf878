"""Dynamic batching for embeddings: concurrent requests to one loaded model run as one call on its worker.

Each caller joins the model's pending list and hands the slot one call of its
own, so the slot's queue counts every request (max_queue, overloaded, /ready)
as before. Whichever call a worker thread runs first takes the pending
requests, oldest first, up to a batch of texts, waiting up to `wait_s` for as
many callers as the last few gathered calls had (none at concurrency 1), and
embeds them as one length-sorted call; each caller gets its rows back in its
order. A caller whose request another call served gives its own queue place
back unrun. A gathered call that fails is run again caller by caller, so one
caller's bad input fails that caller alone; out of memory halves the batch
(Halving), and each caller served records those halvings as its remedies.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from inferrelay.engines.base import Embeddings
from inferrelay.routing.batching import Embedded, Halving
from inferrelay.runtime.slots import LoadedSlot

RECENT_CALLS = 4
"""How many gathered calls the expected number of callers looks back over."""
_ATTRIBUTE = "embed_coalescer"

EmbedRun = Callable[[list[str], int, bool], Embedded]
"""Embeds texts at a batch size, truncated or not, on the slot's worker thread (embed_counted with the model and
memory check)."""


@dataclass
class Answer:
    """One caller's part of a gathered call: its rows and tokens, or its error; the halvings either way."""

    embeddings: Embeddings | None = None
    error: BaseException | None = None
    halvings: list[tuple[int, int]] = field(default_factory=list)


@dataclass(eq=False)
class _Request:
    texts: list[str]
    future: asyncio.Future[Answer]
    loop: asyncio.AbstractEventLoop
    truncate: bool = True

    def settle(self, answer: Answer) -> None:
        """From a worker thread: hand the answer to the caller on its loop (unless it went away)."""

        def deliver() -> None:
            if not self.future.done():
                self.future.set_result(answer)

        self.loop.call_soon_threadsafe(deliver)


class EmbedCoalescer:
    """The pending embeddings requests of one loaded model, gathered into calls on its worker."""

    def __init__(self, slot: LoadedSlot, run: EmbedRun, batch_size: int, wait_s: float) -> None:
        self._slot = slot
        self._run = run
        self.batch_size = batch_size
        self.wait_s = wait_s
        self._pending: deque[_Request] = deque()
        self._arrived = threading.Condition()
        self._recent: deque[int] = deque(maxlen=RECENT_CALLS)  # callers per gathered call
        self.calls = 0  # gathered calls run, for tests and stats

    async def embed(self, texts: list[str], truncate: bool = True) -> Answer:
        """`texts` embedded with the other callers' (those asking the same `truncate`)."""
        loop = asyncio.get_running_loop()
        request = _Request(texts, loop.create_future(), loop, truncate)
        with self._arrived:
            self._pending.append(request)
            self._arrived.notify()
        call = asyncio.ensure_future(self._slot.call(self._drain))
        try:
            await asyncio.wait((request.future, call), return_when=asyncio.FIRST_COMPLETED)
            refused = call.exception() if call.done() and not call.cancelled() else None
            if refused is not None and not request.future.done() and self._withdraw(request):
                raise refused  # the slot refused the call (full, unloaded) before any call took the request
            return await request.future
        finally:
            self._withdraw(request)
            if not call.done():
                call.cancel()  # served by another call: give the queue place back (a started call just ends)
            call.add_done_callback(_retrieve)

    def _withdraw(self, request: _Request) -> bool:
        """Take a request back if no call took it yet."""
        with self._arrived:
            if request in self._pending:
                self._pending.remove(request)
                return True
        return False

    def _drain(self) -> None:
        """On the worker thread: gather what is pending and serve it; nothing pending, nothing to do."""
        group = self._gather()
        if group:
            self.calls += 1
            if len(group) > 1:
                self._slot.batches += 1
                self._slot.batched_requests += len(group)
            self._serve(group)

    def _gather(self) -> list[_Request]:
        with self._arrived:
            if not self._pending:
                return []
            expected = max(self._recent, default=1)
            deadline = time.monotonic() + self.wait_s
            while len(self._pending) < expected and sum(len(r.texts) for r in self._pending) < self.batch_size:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._arrived.wait(remaining)
            group = [self._pending.popleft()]
            size = len(group[0].texts)
            while (
                self._pending
                and size + len(self._pending[0].texts) <= self.batch_size
                and self._pending[0].truncate == group[0].truncate
            ):
                size += len(self._pending[0].texts)
                group.append(self._pending.popleft())
            self._recent.append(len(group))
            return group

    def _serve(self, group: list[_Request]) -> None:
        try:
            if len(group) == 1:
                group[0].settle(self._alone(group[0], []))
                return
            halvings: list[tuple[int, int]] = []
            texts = [text for request in group for text in request.texts]
            truncate = group[0].truncate
            try:
                embedded = Halving(self.batch_size, _noting(halvings))(lambda size: self._run(texts, size, truncate))
            except Exception:  # one caller's input may be the cause: each caller alone gets what it would have
                for request in group:
                    request.settle(self._alone(request, list(halvings)))
                return
            for request, answer in zip(group, _split(embedded, [len(r.texts) for r in group], halvings), strict=True):
                request.settle(answer)
        except BaseException as exc:  # never leave a caller waiting
            for request in group:
                request.settle(Answer(error=exc))
            raise

    def _alone(self, request: _Request, halvings: list[tuple[int, int]]) -> Answer:
        texts, truncate = request.texts, request.truncate
        try:
            embedded = Halving(self.batch_size, _noting(halvings))(lambda size: self._run(texts, size, truncate))
        except Exception as exc:
            return Answer(error=exc, halvings=halvings)
        return Answer(Embeddings(embedded.vectors, round(embedded.tokens())), halvings=halvings)


def _split(embedded: Embedded, sizes: list[int], halvings: list[tuple[int, int]]) -> list[Answer]:
    """Each caller's rows, in its order, and its tokens: the shares rounded so that they add up to the count."""
    spans = list(itertools.pairwise(itertools.accumulate(sizes, initial=0)))
    tokens = apportion([embedded.tokens(a, b) for a, b in spans])
    return [
        Answer(Embeddings(embedded.vectors[a:b], count), halvings=list(halvings))
        for (a, b), count in zip(spans, tokens, strict=True)
    ]


def apportion(shares: list[float]) -> list[int]:
    """Whole numbers, each its share rounded down or up, adding up to the shares' rounded total
    (the largest remainders get the units left)."""
    floors = [int(share) for share in shares]
    left = round(sum(shares)) - sum(floors)
    by_remainder = sorted(range(len(shares)), key=lambda i: shares[i] - floors[i], reverse=True)
    for i in by_remainder[: max(left, 0)]:
        floors[i] += 1
    return floors


def _noting(halvings: list[tuple[int, int]]) -> Callable[[int, int], None]:
    return lambda size, half: halvings.append((size, half))


def _retrieve(call: asyncio.Future[None]) -> None:
    """A call nobody awaits any more: its outcome is read so that asyncio does not report it as lost."""
    if not call.cancelled():
        with contextlib.suppress(BaseException):
            call.exception()


def coalescer_for(slot: LoadedSlot, make: Callable[[], EmbedCoalescer]) -> EmbedCoalescer:
    """The slot's coalescer, made on first use; it lives and goes with the slot (an unloaded slot is dropped)."""
    found = vars(slot).get(_ATTRIBUTE)
    if not isinstance(found, EmbedCoalescer):
        found = make()
        setattr(slot, _ATTRIBUTE, found)
    return found
