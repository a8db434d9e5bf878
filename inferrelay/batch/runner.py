"""One batch job, run to the end or to the next crash, and resumed from where it stopped.

A shard's rows are computed shortest first (short texts pad with short
texts: several times faster on a CPU), in an order that is the same on every
run, so a resume starts right after the last valid checkpoint. Each
checkpoint (`checkpoint_every` batches) keeps each row's place in the shard,
and the shard's output is put back in input order when it is closed.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import pyarrow as pa

from inferrelay.batch.checkpoints import ROW, finalize_shard, mark_done, verify_shard, write_checkpoint
from inferrelay.batch.inputs import fingerprint, read_rows
from inferrelay.batch.manifest import Manifest, ShardState, check_compatible
from inferrelay.engines.base import EmbeddingModel
from inferrelay.errors import ErrorKind, classify
from inferrelay.routing.batching import embed_sorted

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbedJob:
    input: Path
    outdir: Path
    model: str
    text_column: str = "text"
    id_column: str = "id"
    batch_size: int = 32
    shard_size: int = 10_000
    checkpoint_every: int = 8
    max_retries: int = 2

    def parameters(self) -> dict[str, Any]:
        """What the output depends on: changing any of these makes a different job."""
        return {"task": "embed", "model": self.model, "text_column": self.text_column, "id_column": self.id_column}


@dataclass
class Summary:
    rows: int = 0
    rows_computed: int = 0
    checkpoints_dropped: int = 0
    seconds: float = 0.0
    failed: list[str] = field(default_factory=list)
    stopped: bool = False


class Stop:
    """Ctrl-C (SIGINT) or SIGTERM: finish the current checkpoint, then stop."""

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


def open_manifest(job: EmbedJob, restart: bool) -> tuple[Manifest, pa.Table]:
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


def run_embed(job: EmbedJob, model: EmbeddingModel, restart: bool = False, stop: Stop | None = None) -> Summary:
    started = time.perf_counter()
    stop = stop or Stop()
    manifest, rows = open_manifest(job, restart)
    summary = Summary(rows=manifest.total_rows)
    embed = Halving(model, job.batch_size)
    for shard in manifest.shards:
        summary.checkpoints_dropped += verify_shard(job.outdir, shard)
        if shard.state == "done":
            continue
        if shard.state == "failed":  # run again: the cause may be fixed
            shard.attempts, shard.state = 0, "pending"
        summary.rows_computed += _attempts(job, manifest, shard, rows, embed, stop, summary)
        if stop.requested:
            summary.stopped = True
            break
    for shard in manifest.shards:
        if shard.state == "done":
            finalize_shard(job.outdir, shard)  # again after a crash between .done and the output file
    summary.seconds = time.perf_counter() - started
    return summary


def _attempts(
    job: EmbedJob, manifest: Manifest, shard: ShardState, rows: pa.Table, embed: Halving, stop: Stop, summary: Summary
) -> int:
    """Run a shard, again after a failure, up to max_retries more times; then it is failed, with its error."""
    while True:
        shard.state, shard.attempts = "running", shard.attempts + 1
        manifest.save(job.outdir)
        try:
            return _run_shard(job, manifest, shard, rows, embed, stop)
        except Exception as exc:
            error = classify(exc)
            shard.last_error = f"{error.kind.value}: {error.message} (hint: {error.hint})"
            if shard.attempts > job.max_retries:
                shard.state = "failed"
                manifest.save(job.outdir)
                summary.failed.append(f"shard {shard.index}: {shard.last_error}")
                return 0
            log.warning("shard %d failed (attempt %d), retrying: %s", shard.index, shard.attempts, shard.last_error)


def _run_shard(job: EmbedJob, manifest: Manifest, shard: ShardState, rows: pa.Table, embed: Halving, stop: Stop) -> int:
    """The shard's rows, shortest first (the same order on every run), a checkpoint every few batches."""
    part = rows.slice(shard.start, shard.stop - shard.start)
    texts = part.column("text").to_pylist()
    order = np.argsort(np.array([len(t) for t in texts]), kind="stable")
    chunk_rows = job.batch_size * job.checkpoint_every
    computed = 0
    while shard.rows_done < len(order):
        positions = order[shard.rows_done : shard.rows_done + chunk_rows]
        vectors = embed([texts[p] for p in positions])
        table = pa.table(
            {
                ROW: pa.array(positions, type=pa.int64()),
                "id": part.column("id").take(pa.array(positions)),
                "embedding": _vectors_column(vectors),
            }
        )
        write_checkpoint(job.outdir, shard, table)
        manifest.save(job.outdir)
        computed += len(positions)
        if stop.requested and shard.rows_done < len(order):
            shard.state = "pending"
            manifest.save(job.outdir)
            return computed
    mark_done(job.outdir, shard)
    manifest.save(job.outdir)
    return computed


def _vectors_column(vectors: np.ndarray) -> pa.Array:
    flat = pa.array(vectors.astype(np.float32).ravel(), type=pa.float32())
    return pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1]).cast(pa.list_(pa.float32()))


class Halving:
    """Embeds with the batch size that works: out of memory, the batch is halved (down to one) and stays so."""

    def __init__(self, model: EmbeddingModel, batch_size: int, on_halve: Callable[[int], None] | None = None) -> None:
        self._model = model
        self.batch_size = batch_size
        self._on_halve = on_halve or (lambda size: log.warning("out of memory: batch size now %d", size))

    def __call__(self, texts: list[str]) -> np.ndarray:
        while True:
            try:
                return embed_sorted(self._model, texts, self.batch_size).vectors
            except Exception as exc:
                if classify(exc).kind is not ErrorKind.OUT_OF_MEMORY or self.batch_size == 1:
                    raise
                self.batch_size //= 2
                self._on_halve(self.batch_size)
