"""The job's manifest, `OUTDIR/_manifest.json`: what the job computes and how far each shard got.

It is the single source of truth on resume: a checkpoint counts only once the
manifest names it with its sha256. The leading underscore keeps it out of the
Parquet dataset that `pandas.read_parquet(OUTDIR)` discovers.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from inferrelay.batch.durable import write_atomic

MANIFEST_NAME = "_manifest.json"
MANIFEST_VERSION = 1


_UNSET = object()


class JobChanged(ValueError):
    """The input or the parameters differ from the job already in OUTDIR."""


@dataclass(frozen=True)
class CheckpointRecord:
    """One Parquet part of a shard: rows [first_row, first_row + rows) counted from the shard's start."""

    file: str  # relative to OUTDIR
    first_row: int
    rows: int
    sha256: str


@dataclass
class ShardState:
    """Input rows [start, stop) and how far their results have been durably written."""

    index: int
    start: int
    stop: int
    state: str = "pending"  # "pending" | "running" | "done" | "failed"
    rows_done: int = 0
    attempts: int = 0
    last_error: str | None = None
    checkpoints: list[CheckpointRecord] = field(default_factory=list)


@dataclass
class Manifest:
    version: int
    input_fingerprint: str
    input_path: str
    parameters: dict[str, Any]
    total_rows: int
    shards: list[ShardState]

    @classmethod
    def new(
        cls, input_path: str, fingerprint: str, parameters: dict[str, Any], total_rows: int, shard_size: int
    ) -> Manifest:
        if shard_size < 1:
            raise ValueError(f"shard size must be at least 1, got {shard_size}")
        shards = [
            ShardState(index=i, start=start, stop=min(start + shard_size, total_rows))
            for i, start in enumerate(range(0, total_rows, shard_size))
        ]
        return cls(MANIFEST_VERSION, fingerprint, input_path, _as_json(parameters), total_rows, shards)

    def save(self, outdir: Path) -> None:
        outdir.mkdir(parents=True, exist_ok=True)
        write_atomic(outdir / MANIFEST_NAME, json.dumps(asdict(self), indent=1).encode())

    @classmethod
    def load(cls, outdir: Path) -> Manifest | None:
        """The manifest in `outdir`, or None when there is none yet."""
        path = outdir / MANIFEST_NAME
        if not path.exists():
            return None
        try:
            raw = json.loads(path.read_bytes())
            shards = [
                ShardState(**{**s, "checkpoints": [CheckpointRecord(**c) for c in s["checkpoints"]]})
                for s in raw.pop("shards")
            ]
            manifest = cls(**raw, shards=shards)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ValueError(f"{path} is not a readable batch manifest: {exc}") from None
        if manifest.version != MANIFEST_VERSION:
            raise ValueError(f"{path} has manifest version {manifest.version}; this version reads {MANIFEST_VERSION}")
        return manifest


def check_compatible(existing: Manifest, fingerprint: str, parameters: dict[str, Any]) -> None:
    """Refuse to resume a job whose input or parameters changed, saying exactly what changed."""
    changes = []
    if existing.input_fingerprint != fingerprint:
        changes.append(f"input changed: {existing.input_fingerprint[:12]} -> {fingerprint[:12]}")
    new = _as_json(parameters)
    for name in sorted(existing.parameters.keys() | new.keys()):
        old_value, new_value = existing.parameters.get(name, _UNSET), new.get(name, _UNSET)
        if old_value != new_value:
            changes.append(f"{name}: {_show(old_value)} -> {_show(new_value)}")
    if changes:
        raise JobChanged("; ".join(changes))


def _show(value: Any) -> str:
    return "(unset)" if value is _UNSET else repr(value)


def _as_json(parameters: dict[str, Any]) -> dict[str, Any]:
    """Parameters as they read back from JSON (tuples become lists), so old and new compare equal."""
    return dict(json.loads(json.dumps(parameters)))
