"""Each request followed from arrival to its last byte: metrics when it finishes, and a row in the request log."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from inferrelay.access import caller
from inferrelay.access.keys import Key
from inferrelay.errors import InferrelayError
from inferrelay.observe import context, tracing
from inferrelay.observe.metrics import Metrics
from inferrelay.observe.requestlog import LogRow, RequestLog
from inferrelay.outcome import Attempt, ChainFailed, Remedy, Served

NO_BACKEND = "none"


@dataclass
class Tracked:
    request_id: str
    model: str
    kind: str
    stream: bool
    at: float = field(default_factory=time.time)
    started: float = field(default_factory=time.perf_counter)
    backend: str | None = None
    attempts: list[Attempt] = field(default_factory=list)
    remedies: list[Remedy] = field(default_factory=list)
    status: int = 200
    outcome: str = "success"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    first_token_at: float | None = None
    done: bool = False
    span: Any = None  # the request's trace span, when tracing is on
    key: Key | None = None  # the caller's key, when keys are in use


class Observer:
    def __init__(self, metrics: Metrics | None, log: RequestLog | None) -> None:
        self.metrics = metrics
        self.log = log
        self.running = 0
        self.remedies_taken: Counter[tuple[str, str]] = Counter()
        """(model, remediation step) -> how many times, since the app started."""
        self.spend: Callable[[Key, int], None] | None = None
        """Told each keyed request's tokens when it is done (access/quota.py)."""
        self.unclassified: Counter[str] = Counter()
        """Exception types that no rule classified (kind `internal`), by module and name: each one can get its
        own rule in error_rules.py."""

    def begin(self, model: str, kind: str, stream: bool, request_id: str | None = None) -> Tracked:
        self.running += 1
        tracked = Tracked(request_id or uuid.uuid4().hex, model, kind, stream, key=caller.current.get())
        context.request_id.set(tracked.request_id)  # for this request's task: sent on to providers
        tracked.span = tracing.start(
            f"{kind} {model}", **{"inferrelay.request_id": tracked.request_id, "inferrelay.model": model}
        )
        return tracked

    def served(self, tracked: Tracked, served: Served[Any]) -> None:
        tracked.backend, tracked.attempts, tracked.remedies = served.backend, served.attempts, served.remedies
        self._count_outcome(served.attempts, served.remedies)
        if tracked.stream:
            tracked.first_token_at = time.perf_counter()  # the stream's first event is ready: fallback is over

    def usage(self, tracked: Tracked, usage: dict[str, Any] | None) -> None:
        if usage:
            tracked.prompt_tokens = int(usage.get("prompt_tokens") or 0)
            tracked.completion_tokens = int(usage.get("completion_tokens") or 0)

    def failed(self, tracked: Tracked, error: InferrelayError) -> None:
        tracked.status, tracked.outcome = error.status, error.kind.value
        tracing.failed(tracked.span, error.kind.value, error.message)
        if isinstance(error, ChainFailed):
            tracked.attempts, tracked.remedies = error.attempts, error.remedies
            self._count_outcome(error.attempts, error.remedies)
        if error.origin is not None and not any(a.origin == error.origin for a in tracked.attempts):
            self.unclassified[error.origin] += 1  # an error that ended the walk before it became an attempt

    def _count_outcome(self, attempts: list[Attempt], remedies: list[Remedy]) -> None:
        for remedy in remedies:
            self.remedies_taken[(remedy.model, remedy.step.value)] += 1
        for attempt in attempts:
            if attempt.origin is not None:
                self.unclassified[attempt.origin] += 1

    def finish(self, tracked: Tracked) -> None:
        """Once per request, when its last byte is sent (or it failed)."""
        if tracked.done:
            return
        tracked.done = True
        self.running -= 1
        ended = time.perf_counter()
        latency = ended - tracked.started
        backend = tracked.backend or NO_BACKEND
        ttft = None if tracked.first_token_at is None else tracked.first_token_at - tracked.started
        if tracked.key is not None and self.spend is not None:
            self.spend(tracked.key, tracked.prompt_tokens + tracked.completion_tokens)
        if self.metrics is not None:
            self._count(tracked, self.metrics, latency, ttft, ended)
        tracing.end(
            tracked.span,
            **{
                "inferrelay.backend": backend,
                "inferrelay.outcome": tracked.outcome,
                "http.response.status_code": tracked.status,
                "gen_ai.usage.input_tokens": tracked.prompt_tokens,
                "gen_ai.usage.output_tokens": tracked.completion_tokens,
            },
        )
        if self.log is not None:
            self.log.add(
                LogRow(
                    tracked.at, tracked.request_id, tracked.model, tracked.kind, tracked.stream, tracked.backend,
                    tracked.status, tracked.outcome, [(a.backend, a.kind.value) for a in tracked.attempts],
                    tracked.prompt_tokens, tracked.completion_tokens, latency * 1000,
                    None if ttft is None else ttft * 1000, tracked.key.name if tracked.key else None,
                )
            )  # fmt: skip

    def _count(self, tracked: Tracked, m: Metrics, latency: float, ttft: float | None, ended: float) -> None:
        labels = (tracked.model, tracked.backend or NO_BACKEND)
        m.requests.labels(*labels, tracked.outcome).inc()
        m.latency.labels(*labels).observe(latency)
        m.prompt_tokens.labels(*labels).inc(tracked.prompt_tokens)
        m.generation_tokens.labels(*labels).inc(tracked.completion_tokens)
        if ttft is not None and tracked.first_token_at is not None:
            m.ttft.labels(*labels).observe(ttft)
            if tracked.completion_tokens > 1:
                m.tpot.labels(*labels).observe((ended - tracked.first_token_at) / (tracked.completion_tokens - 1))
        chain = [a.backend for a in tracked.attempts] + [tracked.backend or NO_BACKEND]
        for attempt, next_backend in zip(tracked.attempts, chain[1:], strict=True):
            if next_backend == attempt.backend:
                m.retries.labels(attempt.backend, attempt.kind.value).inc()
            else:
                m.fallbacks.labels(attempt.backend, next_backend, attempt.kind.value).inc()
        for remedy in tracked.remedies:
            m.remediations.labels(remedy.model, remedy.step.value).inc()
