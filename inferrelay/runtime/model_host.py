"""The model host of `serve --workers N`: one engine worker per model for the whole machine, not one per server.

It runs in the parent of the server processes (server/workers.py) and
listens on a Unix socket in a private folder (0700), with a random key
every connection must prove (multiprocessing's HMAC handshake). A server
that loads a model asks the host over a connection of its own:

    server -> host: ("attach", key, engine reference, engine name, spec as JSON data, device, home)
    host -> server: ("attached", worker address, pid, context length, held bytes, parallel),
                    ("error", kind, message, hint, param), or ("crashed", return code) for a death while loading
    server -> host: ("servers",);  host -> server: ("servers", how many servers hold the worker now)
    server -> host: ("death",) once the worker is gone;  host -> server: ("death", return code or None)

The first server to attach starts the worker (`worker_main --listen`) and
the host loads the model in it; the others connect to the same worker.
The connection is the attachment: a server that unloads the model closes
it, a server that dies closes it too, and the worker is closed when the
last attachment ends. A worker that died is started again by the next
attach, once for all the servers (each one's own restart asks for it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client, Connection, Listener
from typing import Any

from inferrelay.errors import InferrelayError
from inferrelay.runtime.worker_protocol import raise_if_error

log = logging.getLogger(__name__)
ADDRESS_ENV = "INFERRELAY_MODEL_HOST"
KEY_ENV = "INFERRELAY_MODEL_HOST_KEY"
STOP_WAIT_S = 10.0


def host_key() -> bytes:
    """The key every connection to the host and to its workers proves, from the environment the host set."""
    return bytes.fromhex(os.environ[KEY_ENV])


def host_address() -> str | None:
    """The host's socket when this server is one of `serve --workers`; None for a server on its own."""
    return os.environ.get(ADDRESS_ENV) or None


@dataclass
class Hosted:
    """One worker the host started, its own connection to it, and how many servers are attached."""

    process: subprocess.Popen[bytes]
    conn: Connection
    address: str
    name: str
    loaded: tuple[int, int, int]  # context length, bytes the load added, parallel
    attached: int = 0

    def returncode(self) -> int | None:
        """How it ended, once it has (waited for a moment: its socket closes just before the process ends)."""
        try:
            return self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> None:
        """Ask it to close its model and exit; kill it if it does not."""
        with contextlib.suppress(OSError, EOFError):
            self.conn.send((0, "close"))
            if self.conn.poll(STOP_WAIT_S):
                self.conn.recv()
        try:
            self.process.wait(timeout=STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.conn.close()
        with contextlib.suppress(OSError):
            os.unlink(self.address)


class ModelHost:
    def __init__(self) -> None:
        self.folder = tempfile.mkdtemp(prefix="inferrelay-host-")  # 0700: this user's only
        self.key = os.urandom(32)
        self.address = os.path.join(self.folder, "host")
        self._listener = Listener(self.address, "AF_UNIX", authkey=self.key)
        self._workers: dict[str, Hosted] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self._generations = 0
        # One long-lived thread starts every worker: a worker asks the kernel for SIGKILL when the thread that
        # started it ends (PR_SET_PDEATHSIG is per thread), and the servers' connection threads come and go.
        self._starter = ThreadPoolExecutor(1, thread_name_prefix="model-host-start")
        self._closed = False

    def environment(self) -> dict[str, str]:
        """What a server process needs to find the host (and its workers, the key)."""
        return {ADDRESS_ENV: self.address, KEY_ENV: self.key.hex()}

    def start(self) -> None:
        threading.Thread(target=self._accept, name="model-host", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn = self._listener.accept()
            except (OSError, EOFError, AuthenticationError):
                continue
            threading.Thread(target=self._attachment, args=(conn,), daemon=True).start()

    def _attachment(self, conn: Connection) -> None:
        """One server's hold on one model, for as long as its connection stays open."""
        try:
            _, key, reference, engine, spec, device, home = conn.recv()
            hosted = self._attach(key, reference, engine, spec, device, home)
        except InferrelayError as error:
            with contextlib.suppress(OSError):
                conn.send(("error", error.kind.value, error.message, error.hint, error.param))
            conn.close()
            return
        except WorkerDied as died:
            with contextlib.suppress(OSError):
                conn.send(("crashed", died.returncode))
            conn.close()
            return
        except (EOFError, OSError, ValueError):
            conn.close()
            return
        try:
            conn.send(("attached", hosted.address, hosted.process.pid, *hosted.loaded))
            while (asked := conn.recv()[0]) in ("servers", "death"):
                conn.send((asked, hosted.attached if asked == "servers" else hosted.returncode()))
        except (EOFError, OSError):
            pass
        finally:
            conn.close()
            self._release(key, hosted)

    def _attach(self, key: str, reference: str, engine: str, spec: dict[str, Any], device: str, home: str) -> Hosted:
        with self._lock_of(key):
            hosted = self._workers.get(key)
            if hosted is not None and hosted.process.poll() is not None:  # died: the first to ask starts another
                hosted.conn.close()
                hosted = None
            if hosted is None:
                hosted = self._starter.submit(self._start, reference, engine, spec, device, home).result()
                self._workers[key] = hosted
            hosted.attached += 1
            return hosted

    def _release(self, key: str, hosted: Hosted) -> None:
        with self._lock_of(key):
            hosted.attached -= 1
            if hosted.attached > 0 or self._workers.get(key) is not hosted:
                return
            del self._workers[key]
            hosted.stop()
            log.info("closed the %s worker (pid %s): no server holds it", hosted.name, hosted.process.pid)

    def _start(self, reference: str, engine: str, spec: dict[str, Any], device: str, home: str) -> Hosted:
        with self._lock:
            self._generations += 1
            generation = self._generations
        address = os.path.join(self.folder, f"worker-{generation}")
        command = [
            sys.executable, "-m", "inferrelay.runtime.worker_main",
            "--engine", engine, "--model", spec["name"], "--listen", address,
        ]  # fmt: skip
        env = {**os.environ, **self.environment(), "INFERRELAY_WORKER": f"{engine}/{spec['name']}"}
        process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL)
        conn: Connection | None = None
        try:
            conn = self._connect(address, process)
            conn.send((0, "load", reference, spec, device, home))
            reply = raise_if_error(conn.recv()[1:])
        except BaseException as exc:
            if process.poll() is None:
                process.kill()
            returncode = process.wait()
            if conn is not None:
                conn.close()
            with contextlib.suppress(OSError):
                os.unlink(address)
            if isinstance(exc, (EOFError, OSError)):  # it died loading: the server names the death, as its own
                raise WorkerDied(returncode) from None
            raise
        hosted = Hosted(process, conn, address, spec["name"], (reply[1], reply[2], reply[3]))
        log.info("started the %s worker (pid %s) for every server process", spec["name"], process.pid)
        return hosted

    def _connect(self, address: str, process: subprocess.Popen[bytes]) -> Connection:
        """The host's connection to a worker just started, once its socket is there."""
        while True:
            try:
                return Client(address, "AF_UNIX", authkey=self.key)
            except (FileNotFoundError, ConnectionRefusedError):
                if process.poll() is not None:
                    raise EOFError("the worker ended before it listened") from None
                threading.Event().wait(0.02)

    def _lock_of(self, key: str) -> threading.Lock:
        with self._lock:
            return self._locks.setdefault(key, threading.Lock())

    def close(self) -> None:
        """Stop every worker (the servers are gone) and remove the folder."""
        self._closed = True
        self._listener.close()
        with self._lock:
            hosted = list(self._workers.values())
            self._workers.clear()
        for one in hosted:
            one.stop()
        self._starter.shutdown(wait=False)
        shutil.rmtree(self.folder, ignore_errors=True)


class WorkerDied(Exception):
    def __init__(self, returncode: int) -> None:
        super().__init__(f"the worker died while loading ({returncode})")
        self.returncode = returncode
