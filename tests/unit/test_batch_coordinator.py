"""The coordinator's policy with scripted workers: retries, failed shards, dead workers, inputs for generate."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from inferrelay.batch.checkpoints import ROW, write_part
from inferrelay.batch.coordinator import Stop, run_job
from inferrelay.batch.inputs import pick_text_column
from inferrelay.batch.job import BatchJob
from inferrelay.batch.manifest import CheckpointRecord
from inferrelay.batch.pools import ChunkDone, ChunkFailed, Event, InlinePool, WorkerDied
from inferrelay.batch.progress import Progress
from inferrelay.batch.work import Chunk, as_messages, input_length
from inferrelay.engines.devices import visible_gpus
from inferrelay.errors import ErrorKind, InferrelayError


class Scripted:
    """Workers that compute len(text) for each row, and fail or die on the attempts the test names.

    Each slot holds up to `depth` chunks; a worker that dies loses every chunk it held, as a process does.
    """

    def __init__(
        self, job: BatchJob, size: int, die_on: set[tuple[int, int]], fail_shards: set[int], depth: int = 1
    ) -> None:
        self.size, self.job, self.depth = size, job, depth
        self.die_on, self.fail_shards = die_on, fail_shards  # die_on: (shard, chunk number seen)
        self.queue: list[tuple[int, Chunk]] = []
        self.seen: dict[int, int] = {}
        self.replaced: list[int] = []
        self.closed = False

    def submit(self, slot: int, chunk: Chunk) -> None:
        self.queue.append((slot, chunk))

    def next_event(self, timeout: float) -> Event | None:
        slot, chunk = self.queue.pop(0)
        seen = self.seen[chunk.shard] = self.seen.get(chunk.shard, 0) + 1
        if (chunk.shard, seen) in self.die_on:
            return WorkerDied(slot, "worker_died: scripted")
        if chunk.shard in self.fail_shards:
            return ChunkFailed(slot, "bad_request: scripted")
        table = pa.table({ROW: chunk.positions, "id": chunk.ids, "length": [len(t) for t in chunk.inputs]})
        return ChunkDone(slot, write_part(self.job.outdir, chunk.shard, chunk.part, chunk.first_row, table), 1)

    def replace(self, slot: int) -> None:
        self.replaced.append(slot)
        self.queue = [(s, chunk) for s, chunk in self.queue if s != slot]

    def close(self) -> None:
        self.closed = True


def _job(tmp_path: Path, rows: int = 10, max_retries: int = 1) -> BatchJob:
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": i, "text": "x" * (rows - i)}) + "\n" for i in range(rows)))
    return BatchJob(
        task="embed", input=source, outdir=tmp_path / "out", model="m", home=tmp_path, batch_size=2, shard_size=4,
        checkpoint_every=1, max_retries=max_retries,
    )  # fmt: skip


@pytest.mark.parametrize("depth", [1, 2])
def test_a_dead_worker_is_replaced_and_its_shard_retried_from_its_last_checkpoint(tmp_path: Path, depth: int) -> None:
    job = _job(tmp_path)
    pools: list[Scripted] = []

    def make(_: BatchJob) -> Scripted:
        pools.append(Scripted(job, 2, die_on={(1, 2)}, fail_shards=set(), depth=depth))
        return pools[0]

    summary = run_job(job, make)
    assert (summary.workers_died, summary.retries, summary.failed) == (1, 1, [])
    assert pools[0].replaced == [1]
    assert pools[0].closed
    assert summary.rows_computed == 10  # shard 1's first chunk was kept, not computed twice
    frame = pd.read_parquet(job.outdir)
    assert list(frame["id"]) == list(range(10))
    assert list(frame["length"]) == [10 - i for i in range(10)]
    manifest = json.loads((job.outdir / "_manifest.json").read_text())
    assert [s["attempts"] for s in manifest["shards"]] == [1, 2, 1]


@pytest.mark.parametrize("depth", [1, 2])
def test_a_shard_failing_past_max_retries_is_failed_and_the_others_finish(tmp_path: Path, depth: int) -> None:
    job = _job(tmp_path, max_retries=2)
    pool = Scripted(job, 1, die_on=set(), fail_shards={0}, depth=depth)
    summary = run_job(job, lambda _: pool)
    assert summary.failed == ["shard 0: bad_request: scripted"]
    assert summary.retries == 2
    manifest = json.loads((job.outdir / "_manifest.json").read_text())
    assert [(s["state"], s["attempts"]) for s in manifest["shards"]] == [("failed", 3), ("done", 1), ("done", 1)]
    assert list(pd.read_parquet(job.outdir)["id"]) == list(range(4, 10))


def test_a_stop_request_leaves_no_shard_running(tmp_path: Path) -> None:
    job = _job(tmp_path)
    stop = Stop()
    stop.requested = True  # as after Ctrl-C: nothing new starts
    summary = run_job(job, lambda _: Scripted(job, 1, set(), set()), stop=stop)
    assert summary.stopped
    assert summary.rows_computed == 0
    assert {s["state"] for s in json.loads((job.outdir / "_manifest.json").read_text())["shards"]} == {"pending"}


def test_generate_inputs_are_prompts_or_message_lists() -> None:
    assert as_messages("hi") == [{"role": "user", "content": "hi"}]
    chat = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert as_messages(chat) == chat
    assert input_length(chat) == len("be brief") + 2
    with pytest.raises(InferrelayError) as raised:
        as_messages([{"text": "no role"}])
    assert raised.value.kind is ErrorKind.BAD_REQUEST


def test_the_text_column_is_picked_from_each_format(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text('{"messages": [], "id": 1}\n')
    (tmp_path / "b.csv").write_text("id,prompt\n1,hello\n")
    pq.write_table(pa.table({"prompt": ["x"], "messages": [None]}), tmp_path / "c.parquet")
    candidates = ("prompt", "messages")
    assert pick_text_column(tmp_path / "a.jsonl", candidates) == "messages"
    assert pick_text_column(tmp_path / "b.csv", candidates) == "prompt"
    assert pick_text_column(tmp_path / "c.parquet", candidates) == "prompt"
    (tmp_path / "d.jsonl").write_text('{"question": "x"}\n')
    with pytest.raises(
        ValueError, match=r"none of the columns \['prompt', 'messages'\]; its columns are \['question'\]"
    ):
        pick_text_column(tmp_path / "d.jsonl", candidates)


def test_workers_are_pinned_to_the_visible_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert visible_gpus() == ["2", "3"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_gpus() == []


def test_progress_line_shows_rate_eta_and_shards(tmp_path: Path) -> None:
    job = _job(tmp_path)
    progress = Progress(enabled=True, bar=False)
    run_job(job, lambda _: Scripted(job, 1, set(), fail_shards={2}), progress=progress)
    line = progress.line()
    assert line.startswith("8/10 rows (80%), ")
    assert line.endswith("shards 2/3 done, 1 failed")


class Lengths:
    """A worker without a model for the inline pool: each row's result is its text's length; chunks fail on cue."""

    def __init__(self, fail: set[tuple[int, int]], stop: Stop | None = None) -> None:
        self.fail, self.stop = fail, stop  # fail: (shard, first row) on its first computation
        self.batch_size = 2
        self.computed: list[tuple[int, int]] = []

    def compute(self, chunk: Chunk) -> pa.Table:
        self.computed.append((chunk.shard, chunk.first_row))
        if (chunk.shard, chunk.first_row) in self.fail:
            self.fail.discard((chunk.shard, chunk.first_row))
            raise InferrelayError(ErrorKind.BAD_REQUEST, "scripted")
        if self.stop is not None and len(self.computed) == 3:
            self.stop.requested = True  # Ctrl-C while the third chunk computes
        return pa.table({ROW: chunk.positions, "id": chunk.ids, "length": [len(t) for t in chunk.inputs]})

    def write(self, chunk: Chunk, table: pa.Table) -> CheckpointRecord:
        return write_part(self.job_outdir, chunk.shard, chunk.part, chunk.first_row, table)

    def close(self) -> None:
        pass


def _inline(job: BatchJob, worker: Lengths) -> InlinePool:
    worker.job_outdir = job.outdir  # type: ignore[attr-defined]
    return InlinePool(job, make_worker=lambda _: worker)  # type: ignore[arg-type,return-value]


def test_the_inline_pool_computes_ahead_and_a_failed_chunk_voids_the_one_after_it(tmp_path: Path) -> None:
    job = _job(tmp_path, rows=12)
    worker = Lengths(fail={(1, 0)})  # shard 1's first chunk fails once; its second was already submitted
    summary = run_job(job, lambda _: _inline(job, worker))
    assert (summary.retries, summary.failed, summary.rows_computed) == (1, [], 12)
    assert worker.computed[:4] == [(0, 0), (0, 2), (1, 0), (1, 2)]  # two chunks of a shard at a time
    assert worker.computed[4:] == [(2, 0), (2, 2), (1, 0), (1, 2)]  # the retry last, from the shard's start
    frame = pd.read_parquet(job.outdir)
    assert list(frame["id"]) == list(range(12))
    assert list(frame["length"]) == [12 - i for i in range(12)]
    manifest = json.loads((job.outdir / "_manifest.json").read_text())
    assert [s["attempts"] for s in manifest["shards"]] == [1, 2, 1]


def test_a_stop_lets_the_inline_pool_commit_the_chunks_it_holds_then_the_job_resumes(tmp_path: Path) -> None:
    job = _job(tmp_path, rows=12)
    stop = Stop()
    first = run_job(job, lambda _: _inline(job, Lengths(set(), stop)), stop=stop)
    assert first.stopped
    assert first.rows_computed == 8  # shard 1's two chunks were held when the stop came: both committed
    manifest = json.loads((job.outdir / "_manifest.json").read_text())
    assert [(s["state"], s["rows_done"]) for s in manifest["shards"]] == [("done", 4), ("done", 4), ("pending", 0)]
    resumed = run_job(job, lambda _: _inline(job, Lengths(set())))
    assert (resumed.stopped, resumed.rows_computed) == (False, 4)
    assert list(pd.read_parquet(job.outdir)["length"]) == [12 - i for i in range(12)]


def test_a_job_compiles_a_torch_encoder_only_when_its_rows_left_pay_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import inferrelay.batch.job

    monkeypatch.setattr(inferrelay.batch.job, "COMPILE_ROWS", 10)
    job = _job(tmp_path)
    given: list[bool | None] = []

    def make(resolved: BatchJob) -> Scripted:
        given.append(resolved.compile)
        return Scripted(resolved, 1, set(), set())

    run_job(job, make)  # 10 rows left: enough
    run_job(job, make)  # done: none left
    run_job(replace(job, compile=True), make)  # asked, whatever is left
    run_job(replace(job, compile=False), make, restart=True)  # refused, with 10 rows left
    assert given == [True, False, True, False]
