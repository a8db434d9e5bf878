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
from inferrelay.observe.metrics import Metrics, backend_label, model_label
from inferrelay.observe.requestlog import INCOMPLETE, LogRow, RequestLog, bounded
from inferrelay.outcome import Attempt, ChainFailed, Remedy, Served

NO_BACKEND = "none"
CANCELLED = "cancelled"
CLIENT_CLOSED = 499  # nginx's status for a client that closed the connection first


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
    row_id: int | None = None  # a stream's row in the request log, written when its first event is ready


class Observer:
    def __init__(self, metrics: Metrics | None, log: RequestLog | None) -> None:
        self.metrics = metrics
        self.log = log
        self.running = 0
        self.remedies_taken: Counter[tuple[str, str]] = Counter()
        """(model, remediation step) -> how many times, since the app started."""
        self.spend: Callable[[Key, int], None] | None = None
        """Told each keyed request's tokens when it is done (access/quota.py)."""
        self.known_model: Callable[[str], bool] = lambda name: True
        """Whether a model name is this server's (configured, registered, embedded): metrics label only those."""
        self.cancellations: Counter[str] = Counter()
        """Model -> requests whose caller went away before the answer was done (their work was stopped)."""
        self.timeouts: Counter[str] = Counter()
        """Model -> requests that ran past their time budget (request_timeout) and were stopped."""
        self.unclassified: Counter[str] = Counter()
        """Exception types that no rule classified (kind `internal`), by module and name: each one can get its
        own rule in error_rules.py."""

    def begin(self, model: str, kind: str, stream: bool, request_id: str | None = None) -> Tracked:
        self.running += 1
        model = bounded(model)  # a caller's text is kept (log, trace, echoed header) to MAX_TEXT characters
        request_id = bounded(request_id) if request_id else uuid.uuid4().hex
        tracked = Tracked(request_id, model, kind, stream, key=caller.current.get())
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
            if self.log is not None:  # its answer starts to leave now: a row that a crash cannot lose
                tracked.row_id = self.log.add(self._row(tracked, INCOMPLETE, time.perf_counter()))

    def usage(self, tracked: Tracked, usage: dict[str, Any] | None) -> None:
        if usage:
            tracked.prompt_tokens = int(usage.get("prompt_tokens") or 0)
            tracked.completion_tokens = int(usage.get("completion_tokens") or 0)

    def cancelled(self, tracked: Tracked) -> None:
        """The caller closed its connection first; its work was stopped (server/bounds.py)."""
        tracked.status, tracked.outcome = CLIENT_CLOSED, CANCELLED
        self.cancellations[tracked.model] += 1

    def timed_out(self, tracked: Tracked, error: InferrelayError) -> None:
        """The request ran past its time budget; its work was stopped."""
        self.failed(tracked, error)
        self.timeouts[tracked.model] += 1

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
        if self.log is not None:  # before the answer leaves (a stream: its row completed at its end)
            row = self._row(tracked, tracked.outcome, ended)
            if tracked.row_id is None:
                self.log.add(row)
            else:
                self.log.replace(tracked.row_id, row)

    def _row(self, tracked: Tracked, outcome: str, now: float) -> LogRow:
        ttft = None if tracked.first_token_at is None else tracked.first_token_at - tracked.started
        return LogRow(
            tracked.at, tracked.request_id, tracked.model, tracked.kind, tracked.stream, tracked.backend,
            tracked.status, outcome, [(a.backend, a.kind.value) for a in tracked.attempts],
            tracked.prompt_tokens, tracked.completion_tokens, (now - tracked.started) * 1000,
            None if ttft is None else ttft * 1000, tracked.key.name if tracked.key else None,
            [(r.backend, r.step.value, r.detail) for r in tracked.remedies],
        )  # fmt: skip

    def _count(self, tracked: Tracked, m: Metrics, latency: float, ttft: float | None, ended: float) -> None:
        model = model_label(tracked.model, self.known_model)
        labels = (model, backend_label(tracked.backend or NO_BACKEND, tracked.model, model))
        m.requests.labels(*labels, tracked.outcome).inc()
        if tracked.key is not None:  # key names are the operators', never a caller's text
            m.key_requests.labels(tracked.key.name, labels[0], tracked.outcome).inc()
            m.key_tokens.labels(tracked.key.name, labels[0]).inc(tracked.prompt_tokens + tracked.completion_tokens)
        if tracked.outcome == CANCELLED:
            m.cancelled.labels(labels[0]).inc()
        m.latency.labels(*labels).observe(latency)
        m.prompt_tokens.labels(*labels).inc(tracked.prompt_tokens)
        m.generation_tokens.labels(*labels).inc(tracked.completion_tokens)
        if ttft is not None and tracked.first_token_at is not None:
            m.ttft.labels(*labels).observe(ttft)
            if tracked.completion_tokens > 1:
                m.tpot.labels(*labels).observe((ended - tracked.first_token_at) / (tracked.completion_tokens - 1))
        chain = [backend_label(a.backend, tracked.model, model) for a in tracked.attempts] + [labels[1]]
        for attempt, backend, next_backend in zip(tracked.attempts, chain, chain[1:], strict=False):
            if next_backend == backend:
                m.retries.labels(backend, attempt.kind.value).inc()
            else:
                m.fallbacks.labels(backend, next_backend, attempt.kind.value).inc()
        for remedy in tracked.remedies:
            m.remediations.labels(remedy.model, remedy.step.value).inc()
