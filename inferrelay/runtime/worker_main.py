"""The engine worker process: one loaded model, serving the server over one socket until told to stop or orphaned.

    python -m inferrelay.runtime.worker_main --engine ENGINE --model MODEL --fd N

Its argv names the engine and the model, so `ps` shows which worker is
which. It loads the model, runs it once (the smoke run: one token, or one
short input), then serves each call on a thread of its own, as many at once as the model's `parallel`
(calls are tagged with an id; replies carry it). Every failure is
classified here, where the engine's library is loaded, and crosses the
socket as (kind, message, hint); a native crash kills only this process.
The protocol is in runtime/worker_protocol.py.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import importlib
import logging
import os
import queue
import signal
import sys
import threading
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from inferrelay.cancellation import Cancellation, within
from inferrelay.config.schema import ModelSpec
from inferrelay.engines.base import EmbeddingModel, Engine, LoadedModel, TextModel
from inferrelay.errors import classify
from inferrelay.runtime.memory import process_rss
from inferrelay.runtime.worker_protocol import Reply, Request, error_reply

log = logging.getLogger("inferrelay.worker")
PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Linux: the kernel kills this worker when the server dies, however it dies (SIGKILL included)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the closed socket still ends the worker
        pass


def engine_from(reference: str) -> Engine:
    module, _, name = reference.partition(":")
    engine: Engine = getattr(importlib.import_module(module), name)()
    return engine


class Replies:
    """The worker's end of the socket, shared by the threads serving calls: one message at a time."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()

    def send(self, reply: Reply) -> None:
        with self._lock, contextlib.suppress(OSError):  # the server gone: the reading loop sees it and ends
            self._conn.send(reply)


class Calls:
    """The calls in flight. A model with `parallel` 1 is run on the main thread, one call at a time, as a
    worker always ran it; one with more runs each call on a thread of its own, at most `parallel` at once."""

    def __init__(self, replies: Replies) -> None:
        self.replies = replies
        self.model: LoadedModel | None = None
        self._gate = threading.Semaphore(1)
        self._cancels: dict[int, Cancellation] = {}
        self._threads: list[threading.Thread] = []

    def loaded(self, model: LoadedModel) -> None:
        self.model = model
        self._gate = threading.Semaphore(max(1, model.parallel))

    def arrived(self, call: int) -> None:
        """Seen by the reading thread, so that a cancel that follows at once finds its call."""
        self._cancels[call] = Cancellation()

    def cancel(self, call: int) -> None:
        event = self._cancels.get(call)
        if event is not None:  # None: it ended before the cancel came
            event.set()

    def run(self, call: int, op: str, argument: Any) -> None:
        if self.model is None or self.model.parallel <= 1:
            self._serve(call, op, argument)
            return
        thread = threading.Thread(target=self._serve, args=(call, op, argument), daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def finish(self, timeout: float = 5.0) -> None:
        """Let the calls in flight end (a model is not closed under a running call), then close the model."""
        for thread in self._threads:
            thread.join(timeout)
        if self.model is not None:
            self.model.close()

    def _serve(self, call: int, op: str, argument: Any) -> None:
        cancel = self._cancels.get(call) or Cancellation()
        try:
            with self._gate, within(cancel):  # a generation checks it between pieces (TextModel.generate)
                if op == "embed":
                    assert isinstance(self.model, EmbeddingModel)
                    texts, truncate = argument
                    self.replies.send((call, "result", self.model.embed(texts, truncate)))
                elif op == "generate":
                    assert isinstance(self.model, TextModel)
                    self.replies.send((call, "result", self.model.generate(argument)))
                elif op == "stream":
                    assert isinstance(self.model, TextModel)
                    stream(self.replies, call, self.model, argument, cancel)
        except Exception as exc:
            self.replies.send(error_reply(call, classify(exc)))
        finally:
            self._cancels.pop(call, None)


def read_requests(conn: Connection, calls: Calls, inbox: queue.SimpleQueue[Request | None]) -> None:
    """The reading thread: a cancel takes effect here, at once; every other request goes to the main thread."""
    while True:
        try:
            request: Request = conn.recv()
        except (EOFError, OSError):  # the server is gone
            inbox.put(None)
            return
        if request[1] == "cancel":
            calls.cancel(request[0])
            continue
        calls.arrived(request[0])
        inbox.put(request)


def serve(conn: Connection) -> None:
    replies = Replies(conn)
    calls = Calls(replies)
    inbox: queue.SimpleQueue[Request | None] = queue.SimpleQueue()
    threading.Thread(target=read_requests, args=(conn, calls, inbox), daemon=True).start()
    while (request := inbox.get()) is not None:
        call, op = request[0], request[1]
        if op == "close":
            calls.finish()
            replies.send((call, "closed"))
            return
        if op == "load":  # alone, before any other call
            try:
                before = process_rss()
                model = load(*request[2:])
                calls.loaded(model)
                replies.send((call, "loaded", model.context_length, max(0, process_rss() - before), model.parallel))
            except Exception as exc:
                replies.send(error_reply(call, classify(exc, loading=True)))
        else:
            calls.run(call, op, request[2])


def load(reference: str, spec: dict[str, Any], device: str, home: str) -> LoadedModel:
    engine = engine_from(reference)
    model = engine.load(ModelSpec.model_validate(spec), device, Path(home))
    engine.smoke_test(model)
    return model


def stream(replies: Replies, call: int, model: TextModel, generation: Any, cancel: Cancellation) -> None:
    """Pieces as they come; a cancel from the server, seen between two pieces, ends this stream early (its
    sequence only: the model's other calls go on)."""
    pieces = model.stream(generation)
    try:
        for piece in pieces:
            replies.send((call, "piece", piece))
            if cancel.is_set:
                break
    finally:
        pieces.close()  # type: ignore[attr-defined]
    replies.send((call, "end"))


def main() -> None:
    parser = argparse.ArgumentParser(description="an inferrelay engine worker (started by the server)")
    parser.add_argument("--engine", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--fd", type=int, required=True)
    options = parser.parse_args()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the server's to handle: it closes its workers
    die_with_parent()
    logging.basicConfig(level=os.environ.get("INFERRELAY_WORKER_LOG_LEVEL", "WARNING"), stream=sys.stderr)
    serve(Connection(options.fd))


if __name__ == "__main__":
    main()
