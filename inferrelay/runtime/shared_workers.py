"""A server of `serve --workers N` loads a model through the model host (runtime/model_host.py): one worker per
model for the machine, whichever server asked first, and the others attach to it.

To this server the shared worker is a worker like its own (runtime/workers.py): the same calls, the same proxy,
the same `engine_crashed` naming the signal when it dies (the host, its parent, says how it ended). Unloading
the model lets go of it; the host closes it when no server holds it.
"""

from __future__ import annotations

import threading
import time
from multiprocessing.connection import Client, Connection
from pathlib import Path
from typing import Any

from inferrelay.config.schema import ModelSpec
from inferrelay.engines.base import Engine, LoadedModel
from inferrelay.errors import ErrorKind, InferrelayError, death_of, signal_name
from inferrelay.runtime.model_host import host_address, host_key
from inferrelay.runtime.workers import WorkerCrashed, WorkerProcess, engine_reference, proxy_of

ATTACH_TRIES = 3  # a worker that died a moment ago may still be listed: the next try starts another
RETRY_WAIT_S = 0.2


class SharedWorker(WorkerProcess):
    """A worker the host started, connected to by address; `host` is this server's attachment to it."""

    def __init__(self, engine: Engine, spec: ModelSpec, host: Connection, address: str, pid: int) -> None:
        super().__init__(engine, spec, Client(address, "AF_UNIX", authkey=host_key()), pid)
        self._host = host
        self._host_lock = threading.Lock()

    def returncode(self) -> int | None:
        """Asked of the host, which started it and waits for it."""
        code: int | None = self._ask_host("death")
        return code

    def servers(self) -> int | None:
        count: int | None = self._ask_host("servers")
        return count

    def _ask_host(self, what: str) -> Any:
        try:
            with self._host_lock:
                self._host.send((what,))
                return self._host.recv()[1]
        except (EOFError, OSError):
            return None

    def stop(self, timeout: float = 10.0) -> None:
        """Let go: this server's calls end; the worker goes on for the others (the host closes the last one's)."""
        self._stopping = True
        self._conn.close()
        self._host.close()


def start_shared_worker(engine: Engine, spec: ModelSpec, device: str, home: Path) -> LoadedModel:
    """The machine's worker for `spec` on `device`, started by the host if no server holds it; its proxy."""
    address = host_address()
    if address is None:
        raise InferrelayError(ErrorKind.ENGINE_UNAVAILABLE, "no model host: this server is not one of --workers")
    for _ in range(ATTACH_TRIES):
        model = attach(address, engine, spec, device, home)
        if model is not None:
            return model
        time.sleep(RETRY_WAIT_S)
    raise InferrelayError(ErrorKind.ENGINE_CRASHED, f"the shared {engine.name} worker for {spec.name} kept dying")


def attach(address: str, engine: Engine, spec: ModelSpec, device: str, home: Path) -> LoadedModel | None:
    """One attachment; None when the worker the host named was gone by the time this server connected."""
    reference = engine_reference(engine)
    key = "|".join((reference, device, str(home), spec.model_dump_json()))
    host = Client(address, "AF_UNIX", authkey=host_key())
    try:
        host.send(("attach", key, reference, engine.name, spec.model_dump(mode="json"), device, str(home)))
        reply = host.recv()
    except (EOFError, OSError) as exc:
        host.close()
        raise InferrelayError(ErrorKind.ENGINE_UNAVAILABLE, f"the model host did not answer: {exc}") from exc
    if reply[0] != "attached":
        host.close()
        raise refusal(reply, engine, spec)
    _, worker_address, pid, context_length, held, parallel = reply
    try:
        worker = SharedWorker(engine, spec, host, worker_address, pid)
    except (ConnectionRefusedError, FileNotFoundError, EOFError):  # it died between the host's look and ours
        host.close()
        return None
    return proxy_of(worker, context_length, held, parallel)


def refusal(reply: tuple[Any, ...], engine: Engine, spec: ModelSpec) -> InferrelayError:
    """The host's "error" reply as its error; a worker that died while loading as this server's own would."""
    if reply[0] == "crashed":
        code = reply[1]
        message = f"the {engine.name} worker for {spec.name} died of {death_of(code)}"
        return WorkerCrashed(message, engine.crash_hint(signal_name(code)), signal_name(code))
    _, kind, message, hint, param = reply
    return InferrelayError(ErrorKind(kind), message, hint=hint, param=param)
