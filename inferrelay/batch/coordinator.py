"""The coordinator: hands shards to workers chunk by chunk, commits their checkpoints, retries what failed.

The manifest is written here only, after each chunk a worker reports done, so
it always describes checkpoints that are durably on disk. A worker may hold the
next chunk of its shard while the last is written and committed (the pool's
`depth`); the chunks are committed in order, and a failure voids the chunks
after it. A shard's rows are computed shortest first (short texts pad with short
texts: several times faster on a CPU), in an order that is the same on every
run, so a resume starts right after the last valid checkpoint; a shard's output
is put back in input order when it is closed, in a thread beside the next
shard's work.
"""

from __future__ import annotations

import logging
import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from types import FrameType

import numpy as np
import pyarrow as pa

from inferrelay.batch.checkpoints import (
    OutputWriter,
    add_checkpoint,
    finalize_shard,
    mark_done,
    output_path,
    verify_shard,
)
from inferrelay.batch.inputs import fingerprint, read_rows
from inferrelay.batch.job import BatchJob, compile_for
from inferrelay.batch.manifest import Manifest, ShardState, check_compatible
from inferrelay.batch.pools import ChunkDone, ChunkFailed, Event, Pool, WorkerDied
from inferrelay.batch.progress import Progress
from inferrelay.batch.summary import Summary
from inferrelay.batch.work import Chunk, input_length
from inferrelay.observe.metrics import Metrics

log = logging.getLogger(__name__)


class Stop:
    """Ctrl-C (SIGINT) or SIGTERM: finish the chunks in progress, commit them, then stop."""

    def __init__(self) -> None:
        self.requested = False

    def install(self) -> None:
        def request(signum: int, frame: FrameType | None) -> None:
            if self.requested:  # a second Ctrl-C: stop now
                raise KeyboardInterrupt
            self.requested = True
            log.warning("stopping after the current checkpoint (press Ctrl-C again to stop now)")

        signal.signal(signal.SIGINT, request)
        signal.signal(signal.SIGTERM, request)


def open_manifest(job: BatchJob, restart: bool) -> tuple[Manifest, pa.Table]:
    """The job's manifest, new or resumed; a resume of a different job is refused (JobChanged)."""
    rows = read_rows(job.input, job.text_column, job.id_column)
    digest = fingerprint(job.input)
    existing = None if restart else Manifest.load(job.outdir)
    if existing is not None:
        check_compatible(existing, digest, job.parameters())
        return existing, rows
    manifest = Manifest.new(str(job.input), digest, job.parameters(), rows.num_rows, job.shard_size)
    manifest.save(job.outdir)
    return manifest, rows


@dataclass
class _Shard:
    """A shard being computed: its state in the manifest, its rows in the order they are computed, and its chunks
    submitted but not yet reported (a pool of `depth` 2 computes the next while the last is written)."""

    state: ShardState
    order: np.ndarray
    ids: list[object]
    inputs: list[object]
    in_flight: int = 0
    rows_in_flight: int = 0
    error: str | None = None  # a chunk failed: the chunks after it are void, their reports awaited

    def next_chunk(self, rows: int) -> Chunk | None:
        s = self.state
        first = s.rows_done + self.rows_in_flight
        positions = self.order[first : first + rows].tolist()
        if not positions:
            return None
        return Chunk(
            s.index,
            len(s.checkpoints) + self.in_flight,
            first,
            positions,
            [self.ids[p] for p in positions],
            [self.inputs[p] for p in positions],
        )


class Coordinator:
    def __init__(
        self,
        job: BatchJob,
        manifest: Manifest,
        rows: pa.Table,
        pool: Pool,
        stop: Stop,
        progress: Progress,
        metrics: Metrics | None = None,
    ) -> None:
        self.job, self.manifest, self.rows, self.pool = job, manifest, rows, pool
        self.stop, self.progress, self.metrics = stop, progress, metrics
        self.summary = Summary(rows=manifest.total_rows)
        self.depth = pool.depth
        self.active: dict[int, _Shard] = {}
        self.pending: deque[ShardState] = deque()
        self.outputs = OutputWriter(job.outdir)

    def run(self) -> Summary:
        started = time.perf_counter()
        for shard in self.manifest.shards:
            self.summary.checkpoints_dropped += verify_shard(self.job.outdir, shard)
            if shard.state != "done":
                if shard.state == "failed":  # run again: the cause may be fixed
                    shard.attempts = 0
                shard.state = "pending"
                self.pending.append(shard)
        self.manifest.save(self.job.outdir)
        self.progress.begin(self.manifest)
        try:
            while True:
                while self.pending and not self.stop.requested and len(self.active) < self.pool.size:
                    self._start(self.pending.popleft())
                if not self.active:
                    break
                event = self.pool.next_event(timeout=self.progress.interval_s)
                self.progress.refresh()
                if event is not None:
                    self._handle(event)
        finally:
            self.outputs.wait()
        self.summary.stopped = self.stop.requested and any(s.state != "done" for s in self.manifest.shards)
        for shard in self.manifest.shards:  # a crash between .done and the output file leaves no output
            if shard.state == "done" and not output_path(self.job.outdir, shard.index).exists():
                finalize_shard(self.job.outdir, shard)
        self.summary.seconds = time.perf_counter() - started
        self.progress.end(self.summary)
        return self.summary

    def _handle(self, event: Event) -> None:
        shard = self.active[event.slot]
        if isinstance(event, WorkerDied):  # every chunk it held is lost
            self.summary.workers_died += 1
            self.pool.replace(event.slot)
            shard.in_flight, shard.error = 0, event.error
        else:
            shard.in_flight -= 1
            if isinstance(event, ChunkFailed) and shard.error is None:
                shard.error = event.error
            elif isinstance(event, ChunkDone) and shard.error is None:
                self._commit(event, shard)
                return
        if shard.in_flight == 0 and shard.error is not None:
            del self.active[event.slot]
            if self._failed(shard.state, shard.error):
                self.pending.append(shard.state)

    def _start(self, state: ShardState) -> None:
        slot = next(s for s in range(self.pool.size) if s not in self.active)
        part = self.rows.slice(state.start, state.stop - state.start)
        inputs = part.column("text").to_pylist()
        order = np.argsort(np.array([input_length(i) for i in inputs], dtype=np.int64), kind="stable")
        shard = _Shard(state, order, part.column("id").to_pylist(), inputs)
        state.state, state.attempts = "running", state.attempts + 1
        self.manifest.save(self.job.outdir)
        self.active[slot] = shard
        self._fill(slot, shard)
        if shard.in_flight == 0:  # every row already checkpointed: a crash came just before .done
            del self.active[slot]
            self._close(state)

    def _fill(self, slot: int, shard: _Shard) -> None:
        """Keep `depth` chunks of the shard submitted to its slot, in the shard's order."""
        while shard.in_flight < self.depth and not self.stop.requested:
            chunk = shard.next_chunk(self.job.chunk_rows)
            if chunk is None:
                return
            self.pool.submit(slot, chunk)
            shard.in_flight += 1
            shard.rows_in_flight += len(chunk.positions)

    def _commit(self, event: ChunkDone, shard: _Shard) -> None:
        add_checkpoint(shard.state, event.record)  # refuses a chunk out of order
        shard.rows_in_flight -= event.record.rows
        self._fill(event.slot, shard)  # the next chunk computes while this one is committed
        self.manifest.save(self.job.outdir)
        self.summary.rows_computed += event.record.rows
        self.progress.advance(event.record.rows)
        if self.metrics is not None:
            self.metrics.batch_rows.labels("done").inc(event.record.rows)
        if shard.state.rows_done == shard.state.stop - shard.state.start:
            del self.active[event.slot]
            self._close(shard.state)
        elif self.stop.requested and shard.in_flight == 0:
            del self.active[event.slot]
            shard.state.state = "pending"
            self.manifest.save(self.job.outdir)

    def _close(self, state: ShardState) -> None:
        """`.done` and the manifest make the shard done; its output file is written beside the next shard's work."""
        mark_done(self.job.outdir, state)
        self.manifest.save(self.job.outdir)
        self.outputs.write(state)
        self.progress.shard_done()

    def _failed(self, state: ShardState, error: str) -> bool:
        """Record the failure; True when the shard gets another attempt."""
        state.last_error = error
        if state.attempts > self.job.max_retries:
            state.state = "failed"
            self.summary.failed.append(f"shard {state.index}: {error}")
            self.progress.shard_failed()
            if self.metrics is not None:
                self.metrics.batch_rows.labels("failed").inc(state.stop - state.start - state.rows_done)
            log.error("shard %d failed after %d attempts: %s", state.index, state.attempts, error)
        else:
            state.state = "pending"
            self.summary.retries += 1
            log.warning("shard %d failed (attempt %d), retrying: %s", state.index, state.attempts, error)
        self.manifest.save(self.job.outdir)
        return state.state == "pending"


def run_job(
    job: BatchJob,
    make_pool: Callable[[BatchJob], Pool],
    restart: bool = False,
    stop: Stop | None = None,
    progress: Progress | None = None,
    metrics: Metrics | None = None,
) -> Summary:
    """Run or resume `job`; the workers start (and load the model) only once the manifest accepts the job, and
    compile a torch encoder when the rows left pay for it (batch/job.py)."""
    manifest, rows = open_manifest(job, restart)
    left = sum(s.stop - s.start - s.rows_done for s in manifest.shards if s.state != "done")
    job = replace(job, compile=compile_for(left, job.compile), rows_left=left)
    pool = make_pool(job)
    try:
        progress = progress or Progress(enabled=False)
        return Coordinator(job, manifest, rows, pool, stop or Stop(), progress, metrics).run()
    finally:
        pool.close()
