"""The batch job's storage on real files: inputs, atomic writes, the manifest and checkpoints."""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from inferrelay.batch.checkpoints import (
    DONE_MARKER,
    done_marker_valid,
    finalize_shard,
    mark_done,
    output_path,
    read_output,
    shard_dir,
    verify_shard,
    write_checkpoint,
)
from inferrelay.batch.durable import write_atomic
from inferrelay.batch.inputs import fingerprint, read_rows
from inferrelay.batch.manifest import MANIFEST_NAME, CheckpointRecord, JobChanged, Manifest, check_compatible

ROWS = [
    {"id": 10, "text": "a short one"},
    {"id": 7, "text": 'with, a comma and "quotes"'},
    {"id": 3, "text": "007"},
]


def _write_inputs(folder: Path, rows: list[dict[str, object]]) -> dict[str, Path]:
    paths = {ext: folder / f"input.{ext}" for ext in ("jsonl", "csv", "parquet")}
    paths["jsonl"].write_text("".join(json.dumps(row) + "\n" for row in rows))
    with paths["csv"].open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    pq.write_table(pa.Table.from_pylist(rows), paths["parquet"])
    return paths


def test_every_format_reads_the_same_table(tmp_path: Path) -> None:
    expected = pa.table({"id": pa.array([10, 7, 3], pa.int64()), "text": [row["text"] for row in ROWS]})
    for path in _write_inputs(tmp_path, ROWS).values():
        assert read_rows(path).equals(expected), path


def test_ids_default_to_row_numbers_and_columns_can_be_renamed(tmp_path: Path) -> None:
    rows = [{"sentence": f"row {i}", "other": i * 2} for i in range(4)]
    for path in _write_inputs(tmp_path, rows).values():
        table = read_rows(path, text_column="sentence", id_column="key")
        assert table.column_names == ["id", "text"]
        assert table["id"].type == pa.int64()
        assert table["id"].to_pylist() == [0, 1, 2, 3]
        assert table["text"].to_pylist() == ["row 0", "row 1", "row 2", "row 3"]


@pytest.mark.parametrize(
    ("ext", "message"),
    [("jsonl", r"line 1: no 'text' key.*'body'"), ("csv", r"no column 'text'.*'body'"), ("parquet", r"'text'.*'body'")],
)
def test_a_missing_text_column_names_the_columns_there_are(tmp_path: Path, ext: str, message: str) -> None:
    path = _write_inputs(tmp_path, [{"id": 1, "body": "x"}])[ext]
    with pytest.raises(ValueError, match=message):
        read_rows(path)


def test_a_bad_jsonl_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "fine"}\n\n{"text": "broken"\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl, line 3: not valid JSON"):
        read_rows(path)


def test_fingerprint_streams_the_whole_file_and_sees_one_byte(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    data = bytearray(os.urandom(3 * (1 << 20) + 5))
    path.write_bytes(data)
    before = fingerprint(path)
    assert before == hashlib.sha256(data).hexdigest()
    data[-1] ^= 1
    path.write_bytes(data)
    assert fingerprint(path) != before


def test_write_atomic_replaces_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "file.bin"
    write_atomic(target, b"old")
    write_atomic(target, b"new")
    assert target.read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["file.bin"]


def test_write_atomic_that_fails_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "file.bin"
    write_atomic(target, b"old")

    def disk_failure(fd: int) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(os, "fsync", disk_failure)
    with pytest.raises(OSError, match="disk gone"):
        write_atomic(target, b"new")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["file.bin"]


PARAMS = {"model": "all-minilm-l6-v2", "task": "embed", "batch_size": 32, "columns": ("text", "id")}


def test_manifest_splits_into_shards_and_round_trips(tmp_path: Path) -> None:
    manifest = Manifest.new("in.jsonl", "ab" * 32, PARAMS, total_rows=10, shard_size=4)
    assert [(s.index, s.start, s.stop) for s in manifest.shards] == [(0, 0, 4), (1, 4, 8), (2, 8, 10)]
    manifest.shards[1].checkpoints.append(CheckpointRecord("_checkpoints/x.parquet", 0, 2, "cd" * 32))
    manifest.shards[1].last_error = "boom"
    manifest.save(tmp_path)
    assert Manifest.load(tmp_path) == manifest
    assert Manifest.load(tmp_path / "elsewhere") is None


def test_a_damaged_manifest_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / MANIFEST_NAME).write_text('{"version": 1, "shards": [')
    with pytest.raises(ValueError, match="not a readable batch manifest"):
        Manifest.load(tmp_path)


def test_check_compatible_says_what_changed() -> None:
    manifest = Manifest.new("in.jsonl", "ab" * 32, PARAMS, total_rows=10, shard_size=4)
    check_compatible(manifest, "ab" * 32, dict(PARAMS))
    with pytest.raises(JobChanged, match=r"^batch_size: 32 -> 64; temperature: \(unset\) -> 0\.5$"):
        check_compatible(manifest, "ab" * 32, {**PARAMS, "batch_size": 64, "temperature": 0.5})
    with pytest.raises(JobChanged, match=r"^input changed: abababababab -> cdcdcdcdcdcd$"):
        check_compatible(manifest, "cd" * 32, PARAMS)


def _rows(first: int, count: int) -> pa.Table:
    ids = list(range(first, first + count))
    embeddings = pa.array([[float(i), -float(i)] for i in ids], pa.list_(pa.float32()))
    return pa.table({"id": ids, "embedding": embeddings})


def _done_shard(outdir: Path) -> Manifest:
    """One 9-row shard written as three checkpoints of three rows, closed and saved."""
    manifest = Manifest.new("in.jsonl", "ab" * 32, PARAMS, total_rows=9, shard_size=9)
    shard = manifest.shards[0]
    for first in (0, 3, 6):
        write_checkpoint(outdir, shard, _rows(first, 3))
    mark_done(outdir, shard)
    manifest.save(outdir)
    return manifest


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-20])


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(data)


@pytest.mark.parametrize(
    ("damaged_part", "damage", "dropped"),
    [(1, _truncate, 2), (2, _flip_byte, 1), (0, Path.unlink, 3)],
)
def test_verify_drops_a_bad_checkpoint_and_everything_after(
    tmp_path: Path, damaged_part: int, damage: Callable[[Path], None], dropped: int
) -> None:
    shard = _done_shard(tmp_path).shards[0]
    folder = shard_dir(tmp_path, 0)
    damage(folder / f"part-{damaged_part:05d}.parquet")
    assert verify_shard(tmp_path, shard) == dropped
    assert len(shard.checkpoints) == damaged_part
    assert shard.rows_done == 3 * damaged_part
    assert shard.state == "pending"
    assert sorted(p.name for p in folder.iterdir()) == [f"part-{n:05d}.parquet" for n in range(damaged_part)]
    # The shard continues where the valid prefix ends and ends up whole again.
    for first in range(shard.rows_done, 9, 3):
        write_checkpoint(tmp_path, shard, _rows(first, 3))
    mark_done(tmp_path, shard)
    assert verify_shard(tmp_path, shard) == 0
    assert shard.state == "done"
    assert pa.concat_tables(pq.read_table(tmp_path / r.file) for r in shard.checkpoints).equals(_rows(0, 9))


def test_verify_reopens_a_shard_whose_done_marker_is_gone(tmp_path: Path) -> None:
    shard = _done_shard(tmp_path).shards[0]
    finalize_shard(tmp_path, shard)
    (shard_dir(tmp_path, 0) / DONE_MARKER).unlink()
    assert not done_marker_valid(tmp_path, shard)
    assert verify_shard(tmp_path, shard) == 0
    assert (shard.state, shard.rows_done, len(shard.checkpoints)) == ("pending", 9, 3)
    assert not output_path(tmp_path, 0).exists()  # no stale output for a shard that is open again


def test_verify_removes_parts_and_temporary_files_the_manifest_does_not_name(tmp_path: Path) -> None:
    manifest = Manifest.new("in.jsonl", "ab" * 32, PARAMS, total_rows=9, shard_size=9)
    write_checkpoint(tmp_path, manifest.shards[0], _rows(0, 3))
    manifest.save(tmp_path)
    write_checkpoint(tmp_path, manifest.shards[0], _rows(3, 3))  # crash before the manifest is saved
    folder = shard_dir(tmp_path, 0)
    (folder / ".part-00002.parquet.x1y2.tmp").write_bytes(b"half a file")
    shard = Manifest.load(tmp_path).shards[0]  # type: ignore[union-attr]
    assert verify_shard(tmp_path, shard) == 0
    assert (shard.rows_done, shard.state) == (3, "pending")
    assert [p.name for p in folder.iterdir()] == ["part-00000.parquet"]


def test_mark_done_refuses_a_shard_with_rows_missing(tmp_path: Path) -> None:
    manifest = Manifest.new("in.jsonl", "ab" * 32, PARAMS, total_rows=9, shard_size=9)
    write_checkpoint(tmp_path, manifest.shards[0], _rows(0, 3))
    with pytest.raises(ValueError, match="3 of 9 rows"):
        mark_done(tmp_path, manifest.shards[0])


def test_finalized_output_reads_back_as_one_dataset_in_input_order(tmp_path: Path) -> None:
    manifest = Manifest.new("in.jsonl", "ab" * 32, PARAMS, total_rows=23, shard_size=2)
    assert len(manifest.shards) == 12  # more than ten, so file order must not be "1, 10, 11, 2"
    for shard in manifest.shards:
        for first in range(shard.start, shard.stop):
            write_checkpoint(tmp_path, shard, _rows(first, 1))
        mark_done(tmp_path, shard)
    manifest.save(tmp_path)
    for shard in reversed(manifest.shards):
        finalize_shard(tmp_path, shard)
    assert read_output(tmp_path).equals(_rows(0, 23))
    frame = pd.read_parquet(tmp_path)
    assert frame["id"].tolist() == list(range(23))
    assert [list(e) for e in frame["embedding"]] == [[float(i), -float(i)] for i in range(23)]
    assert frame["embedding"].iloc[0].dtype == "float32"


def test_finalize_refuses_an_unfinished_shard(tmp_path: Path) -> None:
    manifest = Manifest.new("in.jsonl", "ab" * 32, PARAMS, total_rows=9, shard_size=9)
    write_checkpoint(tmp_path, manifest.shards[0], _rows(0, 3))
    with pytest.raises(ValueError, match="not done"):
        finalize_shard(tmp_path, manifest.shards[0])
