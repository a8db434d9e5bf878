"""Derived artifacts (ONNX exports, ...) built once per source, atomically, under the cache."""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from inferrelay.config.sources import ModelSource

log = logging.getLogger(__name__)


def cached_artifact(home: Path, kind: str, source: ModelSource, build: Callable[[Path], None]) -> Path:
    """Return the folder for (`kind`, source hash), building it first if absent.

    The build writes into a temporary folder beside the cache entry that is
    renamed into place only when complete, so a crash never leaves a half
    artifact behind; a lock file keeps two processes from building together.
    """
    root = home / "cache"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{kind}-{source.digest()}"
    if final.is_dir():
        return final
    with (root / f".{final.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if final.is_dir():
            return final
        staging = Path(tempfile.mkdtemp(dir=root, prefix=f".{final.name}-"))
        try:
            log.info("building %s for %s into %s", kind, source.path, final)
            build(staging)
            _fsync_tree(staging)
            os.rename(staging, final)
            _fsync_dir(root)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return final


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
