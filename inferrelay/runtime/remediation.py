"""Remediation ladders: what the runtime tries, in order, when an in-process engine fails, and the record of it.

The ladders are data: `LADDERS` maps an error kind to its steps, and
`LOWER_PRECISION` says which precision each engine can step down to. The
fallback chain and the request handlers apply the steps; every step taken is
recorded for the request (the `x-inferrelay-remediation` header) and logged;
the app's observer counts them from each request's outcome.
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

LOWER_PRECISION: dict[tuple[str, str], dict[str, str]] = {
    ("torch", "decoder"): {"float32": "bfloat16"},
    ("torch", "encoder"): {"float32": "bfloat16"},
    ("onnx", "encoder"): {"float32": "int8"},  # int8 weights; the decoder exports are int8 already
}
"""(engine, encoder or decoder) -> the dtype a model runs in -> the lower one that engine can run it in."""


def ladder(kind: ErrorKind) -> tuple[Step, ...]:
    return LADDERS.get(kind, ())


def lower_precision(engine: str, is_encoder: bool, dtype: str) -> str | None:
    return LOWER_PRECISION.get((engine, "encoder" if is_encoder else "decoder"), {}).get(dtype)


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
