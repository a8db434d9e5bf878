"""A shard's results on disk: checksummed Parquet parts while it runs, one output file once it is done.

Layout of OUTDIR:

    _manifest.json                                  the manifest (see manifest.py)
    _checkpoints/shard-00003/part-00000.parquet     a shard's checkpoints, in input order
    _checkpoints/shard-00003/.done                  closes the shard: its parts' sha256, one a line
    part-00003.parquet                              the shard's final output, written by finalize_shard

pyarrow's dataset discovery skips names that start with "_" or ".", so
`pandas.read_parquet(OUTDIR)` sees only the `part-*.parquet` files, one per
finished shard, whose lexical order is shard order: one row per input row, in
input order. Temporary files are hidden the same way (durable.py names them ".…").
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from inferrelay.batch.durable import fsync_dir, sha256_bytes, write_atomic
from inferrelay.batch.manifest import CheckpointRecord, Manifest, ShardState

CHECKPOINT_DIR = "_checkpoints"
DONE_MARKER = ".done"


def shard_dir(outdir: Path, index: int) -> Path:
    return outdir / CHECKPOINT_DIR / f"shard-{index:05d}"


def output_path(outdir: Path, index: int) -> Path:
    return outdir / f"part-{index:05d}.parquet"


def write_checkpoint(outdir: Path, shard: ShardState, table: pa.Table) -> CheckpointRecord:
    """Durably write the shard's next rows and record them; the caller saves the manifest right after."""
    record = write_part(outdir, shard.index, len(shard.checkpoints), shard.rows_done, table)
    add_checkpoint(shard, record)
    return record


def write_part(outdir: Path, shard_index: int, part: int, first_row: int, table: pa.Table) -> CheckpointRecord:
    """Durably write one checkpoint file; a worker does this, and only the coordinator records it.

    A worker that dies between the two leaves a file the manifest does not name:
    the next attempt overwrites it, and verify_shard deletes it on resume.
    """
    folder = shard_dir(outdir, shard_index)
    folder.mkdir(parents=True, exist_ok=True)
    data = _parquet_bytes(table)
    path = folder / f"part-{part:05d}.parquet"
    write_atomic(path, data)
    return CheckpointRecord(str(path.relative_to(outdir)), first_row, table.num_rows, sha256_bytes(data))


def add_checkpoint(shard: ShardState, record: CheckpointRecord) -> None:
    """Append a written part to the shard; it must continue the shard exactly where it stands."""
    if record.first_row != shard.rows_done:
        raise ValueError(f"shard {shard.index}: checkpoint starts at row {record.first_row}, not {shard.rows_done}")
    shard.checkpoints.append(record)
    shard.rows_done += record.rows


def verify_shard(outdir: Path, shard: ShardState) -> int:
    """Keep the longest prefix of valid checkpoints, delete everything else; return how many were dropped.

    A part that is missing, truncated, altered or unreadable invalidates itself and
    every later part, since later rows were computed after it. Files the manifest
    does not name (a crash before the manifest was saved, a temporary file) go too.
    """
    valid = []
    for record in shard.checkpoints:
        if not _checkpoint_valid(outdir, record):
            break
        valid.append(record)
    dropped = len(shard.checkpoints) - len(valid)
    shard.checkpoints = valid
    shard.rows_done = sum(record.rows for record in valid)
    folder = shard_dir(outdir, shard.index)
    keep = {outdir / record.file for record in valid} | {folder / DONE_MARKER}
    for path in folder.iterdir() if folder.is_dir() else ():
        if path not in keep:
            path.unlink()
    if dropped or not done_marker_valid(outdir, shard):
        (folder / DONE_MARKER).unlink(missing_ok=True)
        output_path(outdir, shard.index).unlink(missing_ok=True)
        if dropped or shard.state == "done":
            shard.state = "pending"
    if folder.is_dir():
        fsync_dir(folder)
    return dropped


def mark_done(outdir: Path, shard: ShardState) -> None:
    """Close a shard whose checkpoints cover all of its rows."""
    if shard.rows_done != shard.stop - shard.start:
        raise ValueError(f"shard {shard.index} has {shard.rows_done} of {shard.stop - shard.start} rows written")
    write_atomic(shard_dir(outdir, shard.index) / DONE_MARKER, _done_content(shard))
    shard.state = "done"


def done_marker_valid(outdir: Path, shard: ShardState) -> bool:
    marker = shard_dir(outdir, shard.index) / DONE_MARKER
    covered = sum(record.rows for record in shard.checkpoints) == shard.stop - shard.start
    return covered and marker.is_file() and marker.read_bytes() == _done_content(shard)


ROW = "row"
"""A checkpoint column: the row's place in its shard, when the runner computes rows out of input order."""


def finalize_shard(outdir: Path, shard: ShardState) -> None:
    """Write the done shard's rows as `OUTDIR/part-NNNNN.parquet`, the file readers of the dataset see."""
    if not done_marker_valid(outdir, shard):
        raise ValueError(f"shard {shard.index} is not done; only a closed shard becomes output")
    write_atomic(output_path(outdir, shard.index), _parquet_bytes(_read_parts(outdir, shard)))


class OutputWriter:
    """Writes done shards' output files in a thread of its own, so the next shard computes meanwhile.

    A shard is done once `.done` and the manifest say so; its output file can always be rebuilt from its
    checkpoints (the coordinator does for a done shard without one), so writing it later loses nothing.
    """

    def __init__(self, outdir: Path) -> None:
        self._outdir = outdir
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="inferrelay-batch-output")
        self._writes: list[Future[None]] = []

    def write(self, shard: ShardState) -> None:
        self._writes.append(self._thread.submit(finalize_shard, self._outdir, shard))

    def wait(self) -> None:
        """Every output file written; the first write that failed raises here."""
        try:
            for write in self._writes:
                write.result()
        finally:
            self._writes.clear()
            self._thread.shutdown()


def read_output(outdir: Path) -> pa.Table:
    """Every checkpointed row of every shard, in shard order, straight from the checkpoints."""
    manifest = Manifest.load(outdir)
    if manifest is None:
        raise ValueError(f"{outdir} holds no batch job")
    return pa.concat_tables([_read_parts(outdir, shard) for shard in manifest.shards])


def _read_parts(outdir: Path, shard: ShardState) -> pa.Table:
    """The shard's rows in input order: parts written in another order carry each row's place in `row`."""
    table = pa.concat_tables([pq.ParquetFile(outdir / record.file).read() for record in shard.checkpoints])
    if ROW in table.column_names:  # a numpy argsort and one take: a third of Arrow's sort_by on list columns
        order = np.argsort(table.column(ROW).to_numpy(), kind="stable")
        table = table.take(order).drop_columns([ROW])
    return table


def _checkpoint_valid(outdir: Path, record: CheckpointRecord) -> bool:
    path = outdir / record.file
    if not path.is_file():
        return False
    data = path.read_bytes()
    if sha256_bytes(data) != record.sha256:
        return False
    try:
        return bool(pq.read_table(pa.BufferReader(data)).num_rows == record.rows)
    except (pa.ArrowException, OSError):
        return False


def _done_content(shard: ShardState) -> bytes:
    return "".join(f"{record.sha256}\n" for record in shard.checkpoints).encode()


def _parquet_bytes(table: pa.Table) -> bytes:
    """Without dictionary encoding: on vectors of floats it costs 13x the write time and grows the file."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, use_dictionary=False)
    return bytes(sink.getvalue().to_pybytes())
