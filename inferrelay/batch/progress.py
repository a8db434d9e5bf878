"""What a running batch job shows: a progress bar on a terminal, a plain log line every few seconds otherwise."""

from __future__ import annotations

import logging
import sys
import time
from typing import TYPE_CHECKING, Any

from inferrelay.batch.manifest import Manifest

if TYPE_CHECKING:
    from inferrelay.batch.summary import Summary

log = logging.getLogger("inferrelay.batch")


class Progress:
    """Rows per second, ETA, shards done and failed; `enabled=False` shows nothing (tests, libraries)."""

    def __init__(self, enabled: bool = True, bar: bool | None = None, log_every_s: float = 10.0) -> None:
        self.enabled = enabled
        self.bar = sys.stderr.isatty() if bar is None else bar
        self.interval_s = 1.0 if self.bar else min(log_every_s, 5.0)
        self._log_every_s = log_every_s
        self._tqdm: Any = None
        self.total = self.done = self.computed = 0
        self.shards = self.shards_done = self.shards_failed = 0
        self._started = self._logged = time.monotonic()

    def begin(self, manifest: Manifest) -> None:
        self.total = manifest.total_rows
        self.done = sum(s.rows_done for s in manifest.shards)
        self.shards = len(manifest.shards)
        self.shards_done = sum(s.state == "done" for s in manifest.shards)
        self._started = self._logged = time.monotonic()
        if self.enabled and self.bar:
            from tqdm import tqdm

            self._tqdm = tqdm(total=self.total, initial=self.done, unit="rows", dynamic_ncols=True, file=sys.stderr)
            self._tqdm.set_postfix_str(self._shards())
        elif self.enabled and self.done:
            log.info("resuming: %d of %d rows already done", self.done, self.total)

    def advance(self, rows: int) -> None:
        self.done += rows
        self.computed += rows
        if self._tqdm is not None:
            self._tqdm.update(rows)

    def shard_done(self) -> None:
        self.shards_done += 1
        self._postfix()

    def shard_failed(self) -> None:
        self.shards_failed += 1
        self._postfix()

    def refresh(self) -> None:
        """A log line when one is due (without a bar); the bar redraws itself."""
        now = time.monotonic()
        if not self.enabled or self._tqdm is not None or now - self._logged < self._log_every_s:
            return
        self._logged = now
        log.info("%s", self.line())

    @property
    def rate(self) -> float:
        """Rows computed per second since the job (or its resume) began."""
        elapsed = time.monotonic() - self._started
        return self.computed / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        rate = self.rate
        left = self.total - self.done
        eta = f"{left / rate:.0f} s" if rate > 0 else "unknown"
        share = 100 * self.done / self.total if self.total else 100.0
        return f"{self.done}/{self.total} rows ({share:.0f}%), {rate:.0f} rows/s, ETA {eta}, {self._shards()}"

    def end(self, summary: Summary) -> None:
        if self._tqdm is not None:
            self._tqdm.close()
            self._tqdm = None

    def _shards(self) -> str:
        return f"shards {self.shards_done}/{self.shards} done, {self.shards_failed} failed"

    def _postfix(self) -> None:
        if self._tqdm is not None:
            self._tqdm.set_postfix_str(self._shards())


class ProgressCollector:
    """The job's progress as gauges for `--metrics-port`: rows total and done, shards by state, rows/s."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress

    def collect(self) -> Any:
        from prometheus_client.core import GaugeMetricFamily

        p = self._progress
        yield GaugeMetricFamily("inferrelay:batch_rows_in_job", "Rows of the job's input.", value=p.total)
        yield GaugeMetricFamily("inferrelay:batch_rows_checkpointed", "Rows durably written.", value=p.done)
        shards = GaugeMetricFamily("inferrelay:batch_shards", "The job's shards, by state.", labels=["state"])
        shards.add_metric(["done"], p.shards_done)
        shards.add_metric(["failed"], p.shards_failed)
        shards.add_metric(["other"], p.shards - p.shards_done - p.shards_failed)
        yield shards
        yield GaugeMetricFamily("inferrelay:batch_rows_per_second", "Rows computed per second so far.", value=p.rate)
