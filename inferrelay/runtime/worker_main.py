"""The engine worker process: one loaded model, serving the server over one socket until told to stop or orphaned.

    python -m inferrelay.runtime.worker_main --engine ENGINE --model MODEL --fd N

Its argv names the engine and the model, so `ps` shows which worker is
which. It loads the model, runs it once (the smoke run: one token, or one
short input), then answers requests one at a time. Every failure is
classified here, where the engine's library is loaded, and crosses the
socket as (kind, message, hint); a native crash kills only this process.
The protocol is in runtime/worker_protocol.py.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib
import logging
import os
import signal
import sys
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

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


def serve(conn: Connection) -> None:
    model: LoadedModel | None = None
    while True:
        try:
            request: Request = conn.recv()
        except (EOFError, OSError):  # the server is gone
            return
        op = request[0]
        if op == "cancel":  # arrived after its stream had ended: nothing left to stop
            continue
        if op == "close":
            if model is not None:
                model.close()
            conn.send(("closed",))
            return
        try:
            if op == "load":
                before = process_rss()
                model = load(*request[1:])
                conn.send(("loaded", model.context_length, max(0, process_rss() - before)))
            elif op == "embed":
                assert isinstance(model, EmbeddingModel)
                conn.send(("result", model.embed(request[1])))
            elif op == "generate":
                assert isinstance(model, TextModel)
                conn.send(("result", model.generate(request[1])))
            elif op == "stream":
                assert isinstance(model, TextModel)
                stream(conn, model, request[1])
        except Exception as exc:
            conn.send(error_reply(classify(exc, loading=op == "load")))


def load(reference: str, spec: dict[str, Any], device: str, home: str) -> LoadedModel:
    engine = engine_from(reference)
    model = engine.load(ModelSpec.model_validate(spec), device, Path(home))
    engine.smoke_test(model)
    return model


def stream(conn: Connection, model: TextModel, generation: Any) -> None:
    """Pieces as they come; a ("cancel",) from the server between two pieces ends the stream early."""
    pieces = model.stream(generation)
    try:
        for piece in pieces:
            conn.send(("piece", piece))
            if conn.poll() and conn.recv()[0] == "cancel":
                break
    finally:
        pieces.close()  # type: ignore[attr-defined]
    reply: Reply = ("end",)
    conn.send(reply)


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
