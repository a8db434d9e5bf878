"""Prometheus metrics at `GET /metrics`: vLLM's names and labels where they mean the same thing.

Counters and histograms move as requests finish (`Metrics.request_done`);
the state an operator watches (requests in flight, each loaded model's
waiting and running requests, cooldowns, loaded models and the memory they
hold) is read live at each scrape by `LiveCollector`.
docs/observability.md lists every metric.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

PREFIX = "inferrelay:"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
UNKNOWN = "unknown"
"""The one label of every model name this server does not know: a caller cannot add label values."""


def model_label(name: str, known: Callable[[str], bool]) -> str:
    return name if known(name) else UNKNOWN


def backend_label(backend: str, requested: str, label: str) -> str:
    """A backend named after an unknown requested model (`provider/<what the caller sent>`) as `provider/unknown`."""
    provider, slash, model = backend.partition("/")
    if label == requested or not slash or not model.startswith(requested):  # `requested` may be cut to MAX_TEXT
        return backend
    return f"{provider}/{UNKNOWN}"


@dataclass
class Live:
    """What the live gauges show, read at scrape time."""

    in_flight: int = 0
    queues: dict[str, tuple[int, int]] = field(default_factory=dict)  # loaded model -> (waiting, running)
    batches: dict[str, tuple[int, int]] = field(default_factory=dict)  # loaded model -> (batches, requests in them)
    cooling_down: dict[str, bool] = field(default_factory=dict)
    models_loaded: dict[str, int] = field(default_factory=dict)  # device -> models
    memory_held: dict[str, int] = field(default_factory=dict)  # device -> bytes charged to the budget


class LiveCollector(Collector):
    def __init__(self, read: Callable[[], Live]) -> None:
        self._read = read

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        live = self._read()
        yield GaugeMetricFamily(
            f"{PREFIX}requests_in_flight", "Requests arrived and not yet answered, any backend.", value=live.in_flight
        )
        waiting = GaugeMetricFamily(
            f"{PREFIX}num_requests_waiting", "Requests queued for a loaded model.", labels=["model_name"]
        )
        running = GaugeMetricFamily(
            f"{PREFIX}num_requests_running", "Requests a loaded model is running.", labels=["model_name"]
        )
        for model, (queued, run) in sorted(live.queues.items()):
            waiting.add_metric([model], queued)
            running.add_metric([model], run)
        yield waiting
        yield running
        batches = CounterMetricFamily(
            f"{PREFIX}batches", "Calls that served several gathered requests at once.", labels=["model_name"]
        )
        batched = CounterMetricFamily(
            f"{PREFIX}batched_requests", "Requests served by those calls (over batches: the mean batch).",
            labels=["model_name"],
        )  # fmt: skip
        for model, (calls, requests) in sorted(live.batches.items()):
            batches.add_metric([model], calls)
            batched.add_metric([model], requests)
        yield batches
        yield batched
        cooling = GaugeMetricFamily(
            f"{PREFIX}deployment_cooling_down", "1 while a deployment's circuit is open.", labels=["deployment"]
        )
        for name, state in sorted(live.cooling_down.items()):
            cooling.add_metric([name], 1.0 if state else 0.0)
        yield cooling
        loaded = GaugeMetricFamily(f"{PREFIX}models_loaded", "Models loaded, per device.", labels=["device"])
        held = GaugeMetricFamily(
            f"{PREFIX}memory_held_bytes", "Memory charged to loaded models, per device.", labels=["device"]
        )
        for device in sorted(live.models_loaded):
            loaded.add_metric([device], live.models_loaded[device])
            held.add_metric([device], live.memory_held.get(device, 0))
        yield loaded
        yield held


class Metrics:
    def __init__(self, live: Callable[[], Live] | None = None) -> None:
        self.registry = CollectorRegistry()
        model_backend = ["model_name", "backend"]
        self.requests = Counter(
            f"{PREFIX}requests", "Requests finished, by outcome (success or the error kind).",
            [*model_backend, "outcome"], registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            f"{PREFIX}e2e_request_latency_seconds", "Request latency, from arrival to the last byte.",
            model_backend, buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.ttft = Histogram(
            f"{PREFIX}time_to_first_token_seconds", "Streamed requests: time to the first token.",
            model_backend, buckets=TTFT_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.tpot = Histogram(
            f"{PREFIX}time_per_output_token_seconds", "Streamed requests: time per output token after the first.",
            model_backend, buckets=TPOT_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.prompt_tokens = Counter(
            f"{PREFIX}prompt_tokens", "Prompt tokens processed.", model_backend, registry=self.registry
        )
        self.generation_tokens = Counter(
            f"{PREFIX}generation_tokens", "Tokens generated.", model_backend, registry=self.registry
        )
        self.fallbacks = Counter(
            f"{PREFIX}fallbacks", "A backend failed and the next one was tried.",
            ["from_backend", "to_backend", "error_kind"], registry=self.registry,
        )  # fmt: skip
        self.retries = Counter(
            f"{PREFIX}retries", "A backend failed and was tried again.", ["backend", "error_kind"],
            registry=self.registry,
        )  # fmt: skip
        self.remediations = Counter(
            f"{PREFIX}remediations", "Remediation steps taken (docs/errors.md).", ["model_name", "step"],
            registry=self.registry,
        )  # fmt: skip
        self.cancelled = Counter(
            f"{PREFIX}requests_cancelled", "Requests whose caller went away first; their work was stopped.",
            ["model_name"], registry=self.registry,
        )  # fmt: skip
        self.key_requests = Counter(
            f"{PREFIX}key_requests", "Requests per API key (its name) and model, by outcome.",
            ["key_name", "model_name", "outcome"], registry=self.registry,
        )  # fmt: skip
        self.key_tokens = Counter(
            f"{PREFIX}key_tokens", "Tokens (prompt and generated) per API key (its name) and model.",
            ["key_name", "model_name"], registry=self.registry,
        )  # fmt: skip
        self.batch_rows = Counter(
            f"{PREFIX}batch_rows", "Batch job rows, by outcome (done or failed).", ["outcome"], registry=self.registry
        )
        if live is not None:
            self.registry.register(LiveCollector(live))

    def exposition(self) -> bytes:
        return bytes(generate_latest(self.registry))
