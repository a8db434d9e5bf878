"""Where chunks are computed: in this process, in local worker processes, or (ray_pool.py) on Ray.

A pool has `size` worker slots, each holding up to `depth` chunks of one shard
at a time: with 2, the next chunk is computed while the last one is written and
committed. The coordinator waits for events, one per chunk, in the order the
slot was given them: a chunk done (its checkpoint record), a chunk failed (its
error); or the worker dead (its exit code), which ends every chunk it held. A dead worker is replaced
in the same slot, so the same GPU, by `replace`. A worker that cannot load the
model ends the job (`WorkerLoadFailed`): every shard would fail the same way.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing
import os
import queue
import signal
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any, Protocol

import pyarrow as pa

from inferrelay.batch.job import BatchJob
from inferrelay.batch.manifest import CheckpointRecord
from inferrelay.batch.work import Chunk, Worker, describe
from inferrelay.errors import death_of

log = logging.getLogger(__name__)

CLOSE_TIMEOUT_S = 10.0


class WorkerLoadFailed(RuntimeError):
    """A worker could not load the model: the job cannot run here."""


@dataclass(frozen=True)
class ChunkDone:
    slot: int
    record: CheckpointRecord
    batch_size: int


@dataclass(frozen=True)
class ChunkFailed:
    slot: int
    error: str


@dataclass(frozen=True)
class WorkerDied:
    slot: int
    error: str


Event = ChunkDone | ChunkFailed | WorkerDied


class Pool(Protocol):
    size: int
    depth: int

    def submit(self, slot: int, chunk: Chunk) -> None: ...

    def next_event(self, timeout: float) -> Event | None:
        """The next event of a busy slot, or None when `timeout` seconds pass without one."""

    def replace(self, slot: int) -> None: ...

    def close(self) -> None: ...


def run_chunk(worker: Worker, slot: int, chunk: Chunk) -> Event:
    try:
        return ChunkDone(slot, worker.run(chunk), worker.batch_size)
    except Exception as exc:
        return ChunkFailed(slot, describe(exc))


class InlinePool:
    """One worker in this process: no start-up cost, no copies; a crash here is the job's crash.

    A thread computes the chunks, a writer thread writes each one's checkpoint (Parquet, sha256, fsync) and
    reports it while the next is computed, and this thread commits them: a checkpoint is committed as soon as
    it is written. Failures are reported through the writer too, so reports come in the order of the chunks.
    """

    size = 1
    depth = 2

    def __init__(self, job: BatchJob, make_worker: Callable[[BatchJob], Worker] = Worker) -> None:
        try:
            self._worker = make_worker(job)
        except Exception as exc:
            raise WorkerLoadFailed(describe(exc)) from exc
        self._chunks: queue.Queue[Chunk | None] = queue.Queue()
        self._events: queue.Queue[Event] = queue.Queue()
        self._closing = False
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="inferrelay-batch-writer")
        self._computer = threading.Thread(target=self._compute, name="inferrelay-batch-compute", daemon=True)
        self._computer.start()

    def submit(self, slot: int, chunk: Chunk) -> None:
        self._chunks.put(chunk)

    def next_event(self, timeout: float) -> Event | None:
        try:
            return self._events.get(timeout=timeout)
        except queue.Empty:
            return None

    def _compute(self) -> None:
        while (chunk := self._chunks.get()) is not None and not self._closing:
            try:
                table = self._worker.compute(chunk)
            except BaseException as exc:  # this thread must report every chunk, or the coordinator waits forever
                self._writer.submit(self._events.put, ChunkFailed(0, describe(exc)))
                continue
            self._writer.submit(self._write, chunk, table, self._worker.batch_size)

    def _write(self, chunk: Chunk, table: pa.Table, batch_size: int) -> None:
        try:
            event: Event = ChunkDone(0, self._worker.write(chunk, table), batch_size)
        except Exception as exc:
            event = ChunkFailed(0, describe(exc))
        self._events.put(event)

    def replace(self, slot: int) -> None:
        raise AssertionError("the inline worker cannot die and go on")

    def close(self) -> None:
        """Chunks not yet begun are dropped (a second Ctrl-C); the one computing ends first, as does its write."""
        self._closing = True
        self._chunks.put(None)
        self._computer.join(CLOSE_TIMEOUT_S)
        self._writer.shutdown()
        if not self._computer.is_alive():
            self._worker.close()


@dataclass
class _Process:
    process: BaseProcess
    connection: Connection
    busy: bool = False


class ProcessPool:
    """N worker processes (spawned: nothing of the coordinator's state leaks into them), one per GPU when pinned.

    `devices[i]` becomes slot i's CUDA_VISIBLE_DEVICES. Workers ignore Ctrl-C:
    the coordinator receives it and lets them finish their current chunk.
    """

    depth = 1

    def __init__(self, job: BatchJob, size: int, devices: list[str] | None = None) -> None:
        self.size = size
        self._job = job
        self._devices = devices or []
        self._context = multiprocessing.get_context("spawn")
        self._slots = [self._start(slot) for slot in range(size)]

    def _start(self, slot: int) -> _Process:
        env = {}
        if self._devices:
            env["CUDA_VISIBLE_DEVICES"] = self._devices[slot % len(self._devices)]
        ours, theirs = self._context.Pipe()
        process = self._context.Process(
            target=worker_main, args=(self._job, theirs, env), name=f"inferrelay-batch-worker-{slot}", daemon=True
        )
        process.start()
        theirs.close()
        log.info(
            "worker %d started (pid %d)%s", slot, process.pid, f" on GPU {env['CUDA_VISIBLE_DEVICES']}" if env else ""
        )
        return _Process(process, ours)

    def submit(self, slot: int, chunk: Chunk) -> None:
        worker = self._slots[slot]
        worker.connection.send(chunk)
        worker.busy = True

    def next_event(self, timeout: float) -> Event | None:
        busy = {slot: w for slot, w in enumerate(self._slots) if w.busy}
        if not busy:
            return None
        waitables: dict[Any, int] = {}
        for slot, worker in busy.items():
            waitables[worker.connection] = slot
            waitables[worker.process.sentinel] = slot
        for ready in wait(list(waitables), timeout):
            slot = waitables[ready]
            return self._event(slot)
        return None

    def _event(self, slot: int) -> Event:
        worker = self._slots[slot]
        worker.busy = False
        try:
            if worker.connection.poll():  # a message sent just before dying still counts
                message = worker.connection.recv()
                if isinstance(message, WorkerLoadFailed):
                    raise message
                return dataclasses.replace(message, slot=slot)  # type: ignore[no-any-return]
        except (EOFError, OSError):
            pass
        worker.process.join(CLOSE_TIMEOUT_S)
        code = worker.process.exitcode
        return WorkerDied(slot, f"engine_crashed: worker {slot} (pid {worker.process.pid}) died of {death_of(code)}")

    def replace(self, slot: int) -> None:
        old = self._slots[slot]
        old.connection.close()
        if old.process.is_alive():
            old.process.kill()
        old.process.join(CLOSE_TIMEOUT_S)
        self._slots[slot] = self._start(slot)

    def close(self) -> None:
        for worker in self._slots:
            with contextlib.suppress(OSError, ValueError):  # already dead
                worker.connection.send(None)
        for worker in self._slots:
            worker.process.join(CLOSE_TIMEOUT_S)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(CLOSE_TIMEOUT_S)
            worker.connection.close()


def worker_main(job: BatchJob, connection: Connection, env: dict[str, str]) -> None:
    """A worker process: the environment first (before any library reads CUDA_VISIBLE_DEVICES), then the model."""
    os.environ.update(env)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s worker: %(message)s")
    try:
        worker = Worker(job)
    except Exception as exc:
        connection.send(WorkerLoadFailed(describe(exc)))
        return
    try:
        while (chunk := connection.recv()) is not None:
            connection.send(run_chunk(worker, -1, chunk))
    except (EOFError, OSError, KeyboardInterrupt):
        pass  # the coordinator is gone: its next run recomputes what this worker did not report
    finally:
        worker.close()
