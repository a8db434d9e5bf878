"""Remediation ladders: what the runtime tries, in order, when an in-process engine fails, and the record of it.

The ladders are data: `LADDERS` maps an error kind to its steps; which
precision an engine can step down to is the engine's own fact
(`Engine.precision_steps`). The fallback chain and the request handlers apply
the steps; every step taken is recorded for the request (the
`x-inferrelay-remediation` header) and logged; the app's observer counts them
from each request's outcome.

Who a step is for: a request's own failure takes the request's steps only
(a smaller batch, down to one input; then the next engine, for that request).
The steps that change the model for every caller (lower precision, the CPU)
are taken only when the model's load does not fit, and hold for that load:
its next load (after keep_alive, an eviction, an unload) tries the configured
precision and device first again. So no caller's input, however large,
lowers the model for the others.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from inferrelay.errors import ErrorKind
from inferrelay.observe import tracing
from inferrelay.outcome import Remedy, Step

log = logging.getLogger(__name__)


LADDERS: dict[ErrorKind, tuple[Step, ...]] = {
    ErrorKind.OUT_OF_MEMORY: (Step.SMALLER_BATCH, Step.LOWER_PRECISION, Step.CPU, Step.NEXT_ENGINE),
    ErrorKind.MODEL_LOAD_FAILED: (Step.NEXT_ENGINE,),
    ErrorKind.ENGINE_CRASHED: (Step.NEXT_ENGINE,),
    ErrorKind.DEPENDENCY_MISSING: (Step.SKIP_ENGINE,),
    ErrorKind.ENGINE_UNAVAILABLE: (Step.SKIP_ENGINE,),
}


def ladder(kind: ErrorKind) -> tuple[Step, ...]:
    return LADDERS.get(kind, ())


_current: ContextVar[list[Remedy] | None] = ContextVar("inferrelay_remedies", default=None)


@contextmanager
def recording() -> Iterator[list[Remedy]]:
    """Collect the steps taken while serving one request; a nested recording joins the outer one."""
    outer = _current.get()
    if outer is not None:
        yield outer
        return
    remedies: list[Remedy] = []
    token = _current.set(remedies)
    try:
        yield remedies
    finally:
        _current.reset(token)


def record(model: str, backend: str, step: Step, detail: str) -> Remedy:
    remedy = Remedy(model, backend, step, detail)
    taken = _current.get()
    if taken is not None:
        taken.append(remedy)
    if tracing.enabled():
        from opentelemetry import trace

        trace.get_current_span().add_event("remediation", {"step": step.value, "backend": backend, "detail": detail})
    log.warning("remediation for %s on %s: %s (%s)", model, backend, step.value, detail)
    return remedy
