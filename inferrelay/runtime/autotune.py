"""`runtime.tune: auto`: the first time a model is asked for with nothing measured for it on this machine, the
server tunes it (tune/child.py, in a child process, bounded) and serves it in the measured order; requests for it
wait for the tune, once. A model whose chain the configuration wrote, or one already loaded, is left alone."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path

from inferrelay.config.schema import ModelSpec
from inferrelay.runtime.catalog import ModelCatalog
from inferrelay.tune import fingerprint

log = logging.getLogger(__name__)


class AutoTune:
    def __init__(self, catalog: ModelCatalog, home: Path, seconds: float, enabled: bool) -> None:
        self._catalog = catalog
        self._home = home
        self._seconds = seconds
        self.enabled = enabled
        self._done: set[str] = set()
        self._locks: dict[str, asyncio.Lock] = {}

    async def ensure(self, spec: ModelSpec, loaded: bool) -> ModelSpec:
        """`spec`, in the order measured here; tuned first when it needs to be."""
        if not self.enabled or loaded or spec.name in self._done or self._catalog.pinned(spec.name):
            return spec
        book = self._catalog.tunings
        if book is None:
            return spec
        async with self._locks.setdefault(spec.name, asyncio.Lock()):
            fresh = any(t.fingerprint == fingerprint.digest() for t in book.of(spec.name))
            if not fresh and spec.name not in self._done:
                await self._tune(spec)
            self._done.add(spec.name)
        return self._catalog.get(spec.name) or spec

    async def _tune(self, spec: ModelSpec) -> None:
        log.info("tuning %s on this machine (runtime.tune: auto)", spec.name)
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "inferrelay.tune.child", str(self._home), str(self._seconds), "cpu",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )  # fmt: skip
        _, err = await child.communicate(spec.model_dump_json().encode())
        if child.returncode != 0:  # the configured order serves; the reason is in the log
            log.warning("tuning %s failed (exit %s): %s", spec.name, child.returncode, err.decode()[-2000:])
