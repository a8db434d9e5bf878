"""Engine worker processes, seen from the server: start one per loaded model, talk to it, notice its death.

A worker is `python -m inferrelay.runtime.worker_main`, connected by a
socket pair. The proxies below are the loaded model as the rest of the
server sees it (a TextModel or an EmbeddingModel), so the slots, the walk
and the routes do not know whether a model runs here or in a worker. A
worker that dies, however it dies, turns the call in flight into an
`engine_crashed` error that names the signal.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import queue
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from inferrelay import cancellation
from inferrelay.config.schema import ModelSpec
from inferrelay.engines.base import (
    EmbeddingModel,
    Embeddings,
    Engine,
    GenerationRequest,
    LoadedModel,
    Piece,
    TextModel,
)
from inferrelay.errors import ErrorKind, InferrelayError, death_of, signal_name
from inferrelay.runtime.worker_protocol import FINAL, Reply, raise_if_error

log = logging.getLogger(__name__)


class WorkerProcess:
    """A worker process at the other end of `conn`. Several threads may call it at once, up to the model's
    `parallel`: each call has an id and a queue, and one reader thread hands each reply to its call's queue.
    OwnWorker below is a worker this server started; runtime/shared_workers.py's, one the model host did."""

    def __init__(self, engine: Engine, spec: ModelSpec, conn: Connection, pid: int) -> None:
        self.engine = engine
        self.spec = spec
        self._pid = pid
        self._conn = conn
        self._send_lock = threading.Lock()
        self._calls: dict[int, queue.SimpleQueue[Reply]] = {}
        self._gated: set[int] = set()  # the calls holding a place of the gate
        self._calls_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._gate = threading.BoundedSemaphore(1)  # the model's `parallel` once it is loaded
        self._death: tuple[str, str, str] | None = None
        self._stopping = False
        self._gone = False  # its socket closed
        self._reader = threading.Thread(target=self._read, name=f"worker-{self.pid}", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self._pid

    @property
    def alive(self) -> bool:
        return not self._gone

    def returncode(self) -> int | None:
        """How the worker ended, once it has (None: not known)."""
        raise NotImplementedError

    def servers(self) -> int | None:
        """How many server processes call this worker: this one only, unless the model host shares it."""
        return 1

    def stop(self, timeout: float = 10.0) -> None:
        raise NotImplementedError

    def resident_bytes(self) -> int | None:
        """The worker's resident memory now (Linux), None once it is gone."""
        try:
            pages = int(Path(f"/proc/{self.pid}/statm").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            return None
        return pages * os.sysconf("SC_PAGE_SIZE")

    def allow(self, parallel: int) -> None:
        """Let `parallel` calls be in flight at once (set once, after the load, before any other call)."""
        self._gate = threading.BoundedSemaphore(max(1, parallel))

    def call(self, op: str, *arguments: Any) -> tuple[int, queue.SimpleQueue[Reply]]:
        """Send a call and return its id and the queue its replies arrive on (errors included, as replies;
        a death of the worker as a WorkerCrashed in the queue). Waits while `parallel` calls are in flight."""
        self._gate.acquire()
        return self._send(op, arguments, gated=True)

    def _send(self, op: str, arguments: tuple[Any, ...], gated: bool) -> tuple[int, queue.SimpleQueue[Reply]]:
        call, replies = next(self._ids), queue.SimpleQueue[Reply]()
        with self._calls_lock:
            self._calls[call] = replies
            if gated:
                self._gated.add(call)
        if self._death is not None or not self.alive:
            self._settle(call)
            raise self.crashed()
        try:
            with self._send_lock:
                self._conn.send((call, op, *arguments))
        except OSError as exc:
            self._settle(call)
            raise self.crashed() from exc
        return call, replies

    def cancel(self, call: int) -> None:
        """Stop a stream or a generation in flight (at its next piece); a stream's last replies are read and
        dropped by the reader, a generation answers with an error nobody reads."""
        with self._send_lock, contextlib.suppress(OSError):
            self._conn.send((call, "cancel"))

    def ask(self, op: str, *arguments: Any) -> Reply:
        """One call, its one reply (without the id); an error reply raised as its error."""
        _, replies = self.call(op, *arguments)
        return receive(replies)

    def _read(self) -> None:
        while True:
            try:
                reply: Reply = self._conn.recv()
            except (EOFError, OSError):
                self._gone = True
                break
            call, rest = reply[0], reply[1:]
            with self._calls_lock:
                replies = self._calls.get(call)
            if rest[0] in FINAL:  # its place freed before its caller hears, who may then call again
                self._settle(call)
            if replies is not None:  # None: a late reply to a call already settled
                replies.put(rest)
        with self._calls_lock:
            in_flight = dict(self._calls)
        for call, replies in in_flight.items():  # every call in flight fails with the same death
            self._settle(call)
            replies.put(("crashed", self._ended_during_call()))

    def _ended_during_call(self) -> InferrelayError:
        if self._stopping:
            return InferrelayError(ErrorKind.ENGINE_CRASHED, f"the worker for {self.spec.name} was stopped")
        return self.crashed()

    def _settle(self, call: int) -> None:
        """A call's last reply is in: it leaves the table and its place is free."""
        with self._calls_lock:
            self._calls.pop(call, None)
            if call not in self._gated:
                return
            self._gated.discard(call)
        self._gate.release()

    def abandon(self, call: int) -> None:
        """The caller reads no more: replies still coming are dropped, the place freed when the last one is in."""
        with self._calls_lock:
            if call in self._calls:
                self._calls[call] = queue.SimpleQueue()

    def crashed(self) -> InferrelayError:
        """The error for a worker found dead: what killed it, and what to do (worked out once, logged once)."""
        with self._calls_lock:
            death = self._death
        if death is None:
            returncode = self.returncode()
            how = death_of(returncode)
            message = f"the {self.engine.name} worker for {self.spec.name} (pid {self.pid}) died of {how}"
            with self._calls_lock:
                if self._death is None:
                    log.error("%s", message)
                    self._death = (message, self.engine.crash_hint(signal_name(returncode)), signal_name(returncode))
                death = self._death
        return WorkerCrashed(*death)


class OwnWorker(WorkerProcess):
    """A worker this server started, connected by a socket pair; it dies with the server."""

    def __init__(self, engine: Engine, spec: ModelSpec) -> None:
        ours, theirs = socket.socketpair()
        command = [
            sys.executable, "-m", "inferrelay.runtime.worker_main",
            "--engine", engine.name, "--model", spec.name, "--fd", str(theirs.fileno()),
        ]  # fmt: skip
        env = {**os.environ, "INFERRELAY_WORKER": f"{engine.name}/{spec.name}"}
        self.process = subprocess.Popen(command, pass_fds=[theirs.fileno()], env=env, stdin=subprocess.DEVNULL)
        theirs.close()
        super().__init__(engine, spec, Connection(ours.detach()), self.process.pid)

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def returncode(self) -> int | None:
        try:
            return self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the worker to close its model and exit; kill it if it does not."""
        self._stopping = True
        if self.alive and self._death is None:
            try:
                _, replies = self._send("close", (), gated=False)  # not gated: the worker lets its calls in flight end
                replies.get(timeout=timeout)
            except (InferrelayError, queue.Empty):
                pass
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._conn.close()


def receive(replies: queue.SimpleQueue[Reply]) -> Reply:
    """The next reply of a call; a crash or an error reply raised."""
    reply = replies.get()
    if reply[0] == "crashed":
        raise reply[1]
    return raise_if_error(reply)


class WorkerCrashed(InferrelayError):
    """`engine_crashed`, with the signal's name kept for the crash history and the smoke-run verdict."""

    def __init__(self, message: str, hint: str, signal: str) -> None:
        super().__init__(ErrorKind.ENGINE_CRASHED, message, hint=hint)
        self.signal = signal


def start_worker(engine: Engine, spec: ModelSpec, device: str, home: Path) -> LoadedModel:
    """A worker with `spec` loaded on `device` and smoke-tested; its proxy, shaped like the engine's own model."""
    worker = OwnWorker(engine, spec)
    try:
        (_, context_length, held, parallel) = worker.ask(
            "load", engine_reference(engine), spec.model_dump(mode="json"), device, str(home)
        )
    except BaseException:
        worker.stop(timeout=2)
        raise
    return proxy_of(worker, context_length, held, parallel)


def engine_reference(engine: Engine) -> str:
    """Where the worker imports the engine from: module:class."""
    return f"{type(engine).__module__}:{type(engine).__qualname__}"


def proxy_of(worker: WorkerProcess, context_length: int, held: int, parallel: int) -> LoadedModel:
    """The loaded model as the server sees it, for a worker whose model is loaded."""
    engine, spec = worker.engine, worker.spec
    worker.allow(parallel)
    proxy: WorkerModel = WorkerEncoder(worker) if spec.is_encoder else WorkerDecoder(worker)
    proxy.engine_name = engine.name
    proxy.context_length = context_length
    proxy.held_bytes = held
    proxy.parallel = parallel
    return proxy


class WorkerModel(LoadedModel):
    held_bytes = 0
    """What loading the model added to the worker's resident memory (the worker measures it, as the server
    measures an in-process load); the worker's whole resident size is `worker.resident_bytes()`."""

    def __init__(self, worker: WorkerProcess) -> None:
        self.worker = worker

    def close(self) -> None:
        self.worker.stop()


class WorkerEncoder(WorkerModel, EmbeddingModel):
    def embed(self, texts: list[str], truncate: bool = True) -> Embeddings:
        result: Embeddings = self.worker.ask("embed", (texts, truncate))[1]
        return result


class WorkerDecoder(WorkerModel, TextModel):
    def generate(self, request: GenerationRequest) -> Piece:
        """A cancellation of this call (its caller gone, its deadline passed) is passed on to the worker."""
        worker = self.worker
        call, replies = worker.call("generate", request)
        with cancellation.forwarded(lambda: worker.cancel(call)):
            result: Piece = receive(replies)[1]
        return result

    def stream(self, request: GenerationRequest) -> Iterator[Piece]:
        """Pieces as the worker sends them. Closing the iterator early cancels this stream in the worker (its
        sequence only; other calls in flight go on); what it had sent already is dropped on arrival."""
        worker = self.worker
        call, replies = worker.call("stream", request)
        ended = False
        try:
            with cancellation.forwarded(lambda: worker.cancel(call)):  # its reader gone: the worker hears at once
                while True:
                    try:
                        reply = receive(replies)
                    except InferrelayError:  # its error reply, or the worker's death, was its last word
                        ended = True
                        raise
                    if reply[0] == "end":
                        ended = True
                        return
                    yield reply[1]
        finally:
            if not ended:
                worker.abandon(call)
                worker.cancel(call)


def describe_worker(model: Any, restarts: int) -> dict[str, Any] | None:
    """pid, resident memory and restarts of a model's worker; None for a model in the server's own process."""
    if not isinstance(model, WorkerModel):
        return None
    worker = model.worker
    alive = worker.alive
    return {
        "pid": worker.pid,
        "alive": alive,
        "resident_bytes": worker.resident_bytes(),
        "restarts": restarts,
        "servers": worker.servers(),
    }
