"""Engine worker processes, seen from the server: start one per loaded model, talk to it, notice its death.

A worker is `python -m inferrelay.runtime.worker_main`, connected by a
socket pair. The proxies below are the loaded model as the rest of the
server sees it (a TextModel or an EmbeddingModel), so the slots, the walk
and the routes do not know whether a model runs here or in a worker. A
worker that dies, however it dies, turns the call in flight into an
`engine_crashed` error that names the signal.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

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
from inferrelay.runtime.worker_protocol import Reply, Request, raise_if_error

log = logging.getLogger(__name__)


class WorkerProcess:
    """One worker process and its end of the socket. Used by one thread at a time (the model's slot)."""

    def __init__(self, engine: Engine, spec: ModelSpec) -> None:
        self.engine = engine
        self.spec = spec
        ours, theirs = socket.socketpair()
        command = [
            sys.executable, "-m", "inferrelay.runtime.worker_main",
            "--engine", engine.name, "--model", spec.name, "--fd", str(theirs.fileno()),
        ]  # fmt: skip
        env = {**os.environ, "INFERRELAY_WORKER": f"{engine.name}/{spec.name}"}
        self.process = subprocess.Popen(command, pass_fds=[theirs.fileno()], env=env, stdin=subprocess.DEVNULL)
        theirs.close()
        self._conn = Connection(ours.detach())
        self._lock = threading.Lock()

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def resident_bytes(self) -> int | None:
        """The worker's resident memory now (Linux), None once it is gone."""
        try:
            pages = int(Path(f"/proc/{self.pid}/statm").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            return None
        return pages * os.sysconf("SC_PAGE_SIZE")

    def send(self, request: Request) -> None:
        try:
            self._conn.send(request)
        except OSError as exc:
            raise self.crashed() from exc

    def receive(self) -> Reply:
        try:
            reply: Reply = self._conn.recv()
        except (EOFError, OSError) as exc:
            raise self.crashed() from exc
        return raise_if_error(reply)

    def ask(self, request: Request) -> Reply:
        with self._lock:
            if not self.alive:
                raise self.crashed()
            self.send(request)
            return self.receive()

    def crashed(self) -> InferrelayError:
        """The error for a worker found dead: what killed it, and what to do."""
        try:
            returncode = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            returncode = self.process.wait()
        how = death_of(returncode)
        message = f"the {self.engine.name} worker for {self.spec.name} (pid {self.pid}) died of {how}"
        log.error("%s", message)
        return WorkerCrashed(message, self.engine.crash_hint(signal_name(returncode)), signal_name(returncode))

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the worker to close its model and exit; kill it if it does not."""
        if self.alive:
            try:
                with self._lock:
                    self._conn.send(("close",))
                    if self._conn.poll(timeout):
                        self._conn.recv()
            except (EOFError, OSError):
                pass
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._conn.close()


class WorkerCrashed(InferrelayError):
    """`engine_crashed`, with the signal's name kept for the crash history and the smoke-run verdict."""

    def __init__(self, message: str, hint: str, signal: str) -> None:
        super().__init__(ErrorKind.ENGINE_CRASHED, message, hint=hint)
        self.signal = signal


def start_worker(engine: Engine, spec: ModelSpec, device: str, home: Path) -> LoadedModel:
    """A worker with `spec` loaded on `device` and smoke-tested; its proxy, shaped like the engine's own model."""
    worker = WorkerProcess(engine, spec)
    reference = f"{type(engine).__module__}:{type(engine).__qualname__}"
    try:
        (_, context_length, held) = worker.ask(("load", reference, spec.model_dump(mode="json"), device, str(home)))
    except BaseException:
        worker.stop(timeout=2)
        raise
    proxy: WorkerModel = WorkerEncoder(worker) if spec.is_encoder else WorkerDecoder(worker)
    proxy.engine_name = engine.name
    proxy.context_length = context_length
    proxy.held_bytes = held
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
    def embed(self, texts: list[str]) -> Embeddings:
        result: Embeddings = self.worker.ask(("embed", texts))[1]
        return result


class WorkerDecoder(WorkerModel, TextModel):
    def generate(self, request: GenerationRequest) -> Piece:
        result: Piece = self.worker.ask(("generate", request))[1]
        return result

    def stream(self, request: GenerationRequest) -> Iterator[Piece]:
        """Pieces as the worker sends them. Closing the iterator early cancels the stream in the worker and
        reads what it had already sent, so the socket is clean for the next request."""
        worker = self.worker
        with worker._lock:
            if not worker.alive:
                raise worker.crashed()
            worker.send(("stream", request))
            ended = False
            try:
                while True:
                    try:
                        reply = worker.receive()
                    except WorkerCrashed:
                        raise
                    except InferrelayError:  # the worker's stream failed: its error reply was its last word
                        ended = True
                        raise
                    if reply[0] == "end":
                        ended = True
                        return
                    yield reply[1]
            finally:
                if not ended and worker.alive:
                    _drain(worker)


def _drain(worker: WorkerProcess) -> None:
    try:
        worker.send(("cancel",))
        while worker.receive()[0] != "end":
            pass
    except InferrelayError:  # it died or failed while stopping: the next call finds out
        pass


def describe_worker(model: Any, restarts: int) -> dict[str, Any] | None:
    """pid, resident memory and restarts of a model's worker; None for a model in the server's own process."""
    if not isinstance(model, WorkerModel):
        return None
    worker = model.worker
    alive = worker.alive
    return {"pid": worker.pid, "alive": alive, "resident_bytes": worker.resident_bytes(), "restarts": restarts}
