"""`--backend ray`: the workers are Ray actors, each holding the model, on the cluster RAY_ADDRESS names.

With RAY_ADDRESS unset, a local Ray is started for the job and shut down after
it. The actors write their checkpoints straight into OUTDIR, so OUTDIR must be
on storage every node sees (the same path everywhere); the driver keeps the
manifest there, and a new driver resumes from it exactly as a local job does.
On a cluster with GPUs each actor takes one GPU (Ray pins it with
CUDA_VISIBLE_DEVICES) and the default is one actor per GPU.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

from inferrelay.batch.job import BatchJob
from inferrelay.batch.pools import ChunkFailed, Event, WorkerDied, WorkerLoadFailed, run_chunk
from inferrelay.batch.work import Chunk, Worker, describe
from inferrelay.engines.optional import require

log = logging.getLogger(__name__)


class RayWorker:
    """The actor: the model is loaded on the first chunk, so a load failure comes back as a value, not a dead actor."""

    def __init__(self, job: BatchJob) -> None:
        self._job = job
        self._worker: Worker | None = None

    def run(self, chunk: Chunk) -> Event | WorkerLoadFailed:
        if self._worker is None:
            try:
                self._worker = Worker(self._job)
            except Exception as exc:
                return WorkerLoadFailed(describe(exc))
        return run_chunk(self._worker, -1, chunk)

    def pid(self) -> int:
        return os.getpid()


class RayPool:
    depth = 1  # one remote call per chunk, its result awaited before the next is sent

    def __init__(self, job: BatchJob, workers: int | None) -> None:
        self._ray = require("ray", "'inferrelay[ray]'")
        self._started_ray = not self._ray.is_initialized()
        if self._started_ray:
            address = os.environ.get("RAY_ADDRESS") or None
            self._ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)
        gpus = int(self._ray.cluster_resources().get("GPU", 0))
        self.size = workers or max(gpus, 1)
        resources = {"num_gpus": 1} if gpus else {"num_cpus": 1}
        env = {"env_vars": {"HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}}
        self._actor_class = self._ray.remote(max_restarts=0, runtime_env=env, **resources)(RayWorker)
        self._job = job
        self._actors = [self._start(slot) for slot in range(self.size)]
        self._in_flight: dict[Any, int] = {}

    def _start(self, slot: int) -> Any:
        actor = self._actor_class.remote(self._job)
        log.info("ray worker %d started (pid %d)", slot, self._ray.get(actor.pid.remote()))
        return actor

    def submit(self, slot: int, chunk: Chunk) -> None:
        self._in_flight[self._actors[slot].run.remote(chunk)] = slot

    def next_event(self, timeout: float) -> Event | None:
        if not self._in_flight:
            return None
        ready, _ = self._ray.wait(list(self._in_flight), num_returns=1, timeout=timeout)
        if not ready:
            return None
        slot = self._in_flight.pop(ready[0])
        exceptions = self._ray.exceptions
        try:
            result = self._ray.get(ready[0])
        except exceptions.RayActorError as exc:
            return WorkerDied(slot, f"worker_died: Ray worker {slot} died: {str(exc).splitlines()[0]}")
        except exceptions.RayError as exc:
            return ChunkFailed(slot, f"internal: Ray could not run the chunk: {str(exc).splitlines()[0]}")
        if isinstance(result, WorkerLoadFailed):
            raise result
        return dataclasses.replace(result, slot=slot)

    def replace(self, slot: int) -> None:
        self._ray.kill(self._actors[slot], no_restart=True)
        self._actors[slot] = self._start(slot)

    def close(self) -> None:
        for actor in self._actors:
            self._ray.kill(actor, no_restart=True)
        if self._started_ray:
            self._ray.shutdown()
