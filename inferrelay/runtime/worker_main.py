"""The engine worker process: one loaded model, serving the server over one socket until told to stop or orphaned.

    python -m inferrelay.runtime.worker_main --engine ENGINE --model MODEL --fd N
    python -m inferrelay.runtime.worker_main --engine ENGINE --model MODEL --listen PATH

With `--listen` (the model host of `serve --workers`, runtime/model_host.py) it
serves every server process of the machine: its first connection is the
host's (it loads the model and, when the last server lets go, closes it);
each server connects after, and a server that goes only loses its own calls.

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
from multiprocessing import AuthenticationError
from multiprocessing.connection import Connection, Listener
from pathlib import Path
from typing import Any

from inferrelay.cancellation import Cancellation, within
from inferrelay.config.schema import ModelSpec
from inferrelay.engines.base import EmbeddingModel, Engine, LoadedModel, TextModel
from inferrelay.errors import classify
from inferrelay.runtime.memory import process_rss
from inferrelay.runtime.model_host import host_key
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


class Held:
    """The loaded model and its gate, shared by every connection: at most `parallel` calls run at once."""

    def __init__(self) -> None:
        self.model: LoadedModel | None = None
        self.gate = threading.Semaphore(1)
        self.threads: list[threading.Thread] = []

    def loaded(self, model: LoadedModel) -> None:
        self.model = model
        self.gate = threading.Semaphore(max(1, model.parallel))

    def finish(self, timeout: float = 5.0) -> None:
        """Let the calls in flight end (a model is not closed under a running call), then close the model."""
        for thread in self.threads:
            thread.join(timeout)
        if self.model is not None:
            self.model.close()


class Calls:
    """One connection's calls in flight. A model with `parallel` 1 is run on the main thread, one call at a time,
    as a worker always ran it; one with more runs each call on a thread of its own, at most `parallel` at once."""

    def __init__(self, replies: Replies, held: Held) -> None:
        self.replies = replies
        self.held = held
        self._cancels: dict[int, Cancellation] = {}

    @property
    def model(self) -> LoadedModel | None:
        return self.held.model

    def arrived(self, call: int) -> None:
        """Seen by the reading thread, so that a cancel that follows at once finds its call."""
        self._cancels[call] = Cancellation()

    def cancel(self, call: int) -> None:
        event = self._cancels.get(call)
        if event is not None:  # None: it ended before the cancel came
            event.set()

    def cancel_all(self) -> None:
        """Its server is gone: nobody reads these calls' answers any more."""
        for event in list(self._cancels.values()):
            event.set()

    def run(self, call: int, op: str, argument: Any) -> None:
        if self.model is None or self.model.parallel <= 1:
            self._serve(call, op, argument)
            return
        thread = threading.Thread(target=self._serve, args=(call, op, argument), daemon=True)
        self.held.threads = [t for t in self.held.threads if t.is_alive()] + [thread]
        thread.start()

    def _serve(self, call: int, op: str, argument: Any) -> None:
        cancel = self._cancels.get(call) or Cancellation()
        try:
            with self.held.gate, within(cancel):  # a generation checks it between pieces (TextModel.generate)
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


Inbox = queue.SimpleQueue[tuple[Calls, Request] | None]


def read_requests(conn: Connection, calls: Calls, inbox: Inbox, owner: bool = True) -> None:
    """A connection's reading thread: a cancel takes effect here, at once; every other request goes to the main
    thread. The owner's end (the only server's, or the model host's) ends the worker; another's, its calls."""
    while True:
        try:
            request: Request = conn.recv()
        except (EOFError, OSError):  # that server is gone
            calls.cancel_all()
            if owner:
                inbox.put(None)
            return
        if request[1] == "cancel":
            calls.cancel(request[0])
            continue
        calls.arrived(request[0])
        inbox.put((calls, request))


def serve(conn: Connection, listener: Listener | None = None) -> None:
    """Serve `conn` (the owner) and, with a listener, every server that connects to it once the model is loaded."""
    held = Held()
    inbox: Inbox = queue.SimpleQueue()
    threading.Thread(target=read_requests, args=(conn, Calls(Replies(conn), held), inbox), daemon=True).start()
    while (item := inbox.get()) is not None:
        calls, (call, op, *arguments) = item
        if op == "close":
            held.finish()
            calls.replies.send((call, "closed"))
            return
        if op == "load":  # alone, before any other call
            try:
                before = process_rss()
                model = load(*arguments)
                held.loaded(model)
                loaded = (call, "loaded", model.context_length, max(0, process_rss() - before), model.parallel)
            except Exception as exc:
                calls.replies.send(error_reply(call, classify(exc, loading=True)))
                continue
            if listener is not None:  # others may call once it is loaded
                threading.Thread(target=accept, args=(listener, held, inbox), daemon=True).start()
            calls.replies.send(loaded)
        else:
            calls.run(call, op, arguments[0])


def accept(listener: Listener, held: Held, inbox: Inbox) -> None:
    """Each server process of the machine that connects: its calls, on a reading thread of its own."""
    while True:
        try:
            conn = listener.accept()
        except (OSError, EOFError, AuthenticationError):  # a caller without the host's key is turned away
            continue
        calls = Calls(Replies(conn), held)
        threading.Thread(target=read_requests, args=(conn, calls, inbox, False), daemon=True).start()


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
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--fd", type=int, help="the one server's end of a socket pair")
    where.add_argument("--listen", help="a Unix socket every server process of the machine connects to")
    options = parser.parse_args()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the server's to handle: it closes its workers
    die_with_parent()
    logging.basicConfig(level=os.environ.get("INFERRELAY_WORKER_LOG_LEVEL", "WARNING"), stream=sys.stderr)
    if options.fd is not None:
        serve(Connection(options.fd))
        return
    listener = Listener(options.listen, "AF_UNIX", authkey=host_key())
    serve(listener.accept(), listener)  # the first to connect is the host, which started it


if __name__ == "__main__":
    main()
