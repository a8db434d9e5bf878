"""The `runtime:` section of model-mappings.yaml: where models may come from, memory, keep_alive, queues."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from inferrelay.config.connections import ConnectionLimits
from inferrelay.config.limits import RequestLimits
from inferrelay.config.strict import Strict
from inferrelay.config.units import Duration, Size

DEVICES = ("cpu", "cuda", "mps")
DEFAULT_MAX_QUEUE = 64


class RuntimeSettings(Strict):
    model_roots: list[Path] = Field(
        default_factory=list,
        description="folders that registered models must lie in; empty: $INFERRELAY_HOME/models",
    )
    memory_budget: dict[str, Size] = Field(
        default_factory=dict,
        description="bytes the loaded models may hold, per device (cpu, cuda, mps); absent: no fixed cap",
    )
    free_fraction: float = Field(
        default=0.9,
        gt=0,
        le=1,
        description="a load must also fit in this fraction of the memory the device has free now",
    )
    keep_alive: Duration = Field(default=300.0, description="the default idle time before a model is unloaded")
    tune: Literal["off", "auto"] = Field(
        default="off",
        description="auto: a model asked for with nothing measured on this machine is tuned first (inferrelay "
        "tune, in a child process) and served in the measured engine order; off: only `inferrelay tune` measures",
    )
    tune_seconds: float = Field(default=3.0, gt=0, le=120, description="measuring time per engine and precision")
    max_queue: int = Field(
        default=DEFAULT_MAX_QUEUE,
        ge=0,
        description="requests that may wait for a loaded model beyond those it runs; one more is refused at once "
        "(kind overloaded: the next step serves, or 429). A model's own max_queue overrides it",
    )
    request_timeout: Duration = Field(
        default=600.0,
        description="a request's time budget, from arrival to its last byte; past it the request ends with kind "
        "timeout (504, or an error event in a stream) and its model is freed. A model's own request_timeout "
        "overrides it; 0 or negative: none",
    )
    embed_batch_wait_ms: float = Field(
        default=2.0,
        ge=0,
        le=1000,
        description="dynamic batching of embeddings: how long a gathered call may wait for more concurrent requests "
        "to the same model (at most a batch of 32 inputs); 0 gathers only what is already waiting",
    )
    metrics: bool = Field(default=True, description="Prometheus metrics at GET /metrics")
    metrics_need_key: bool = Field(
        default=False, description="once keys exist, GET /metrics needs one too (else it stays open to scrapers)"
    )
    console: bool = Field(default=True, description="the operator's console at /ui (docs/console.md)")
    request_log: bool = Field(default=True, description="one row per request in $INFERRELAY_HOME/requests.sqlite3")
    request_log_retention: Duration = Field(default=7 * 86400.0, description="rows older than this are deleted")
    engine_isolation: Literal["process", "in_process"] = Field(
        default="process",
        description="process: each loaded model's engine runs in a supervised worker process; in_process: in the "
        "server's process (a model's engine_options.<engine>.isolation overrides it)",
    )
    crash_limit: int = Field(default=3, ge=1, description="this many worker crashes of one engine for one model...")
    crash_window: Duration = Field(default=600.0, description="...within this time put the pair in cooldown")
    crash_cooldown: Duration = Field(default=600.0, description="how long a crash-looping pair is skipped")
    crash_backoff: Duration = Field(
        default=1.0, description="wait before restarting a crashed worker, doubled per recent crash, at most 30s"
    )
    limits: RequestLimits = Field(
        default_factory=RequestLimits, description="how much one request may hold (docs/api.md, Limits)"
    )

    connections: ConnectionLimits = Field(
        default_factory=ConnectionLimits,
        description="slow and idle clients: header, body and keep-alive timeouts, connections at once "
        "(docs/operations.md)",
    )
    state: str | None = Field(
        default=None,
        pattern=r"^rediss?://",
        description="redis://HOST:PORT/DB: rate limits, cooldowns and health shared by every server naming it "
        "(or INFERRELAY_REDIS_URL); absent: each process keeps its own (docs/scaling.md)",
    )
    state_failure: Literal["open", "closed"] = Field(
        default="open",
        description="while Redis does not answer: open, each process on its own state; closed, remote steps "
        "refused (429) until it answers again",
    )
    drain_grace: Duration = Field(
        default=0.0,
        description="after SIGTERM, how long /ready says 503 while new requests are still taken, so a load "
        "balancer stops sending first",
    )
    drain_timeout: Duration = Field(
        default=30.0, description="then, how long running requests may take to finish before the process exits"
    )

    @field_validator("memory_budget")
    @classmethod
    def _known_devices(cls, budget: dict[str, int]) -> dict[str, int]:
        unknown = sorted(set(budget) - set(DEVICES))
        if unknown:
            raise ValueError(f"unknown device {unknown[0]!r}: use {', '.join(DEVICES)}")
        return budget

    def roots(self, home: Path) -> list[Path]:
        return [root.expanduser() for root in self.model_roots] or [home / "models"]
