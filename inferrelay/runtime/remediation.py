"""Remediation ladders: what the runtime tries, in order, when an in-process engine fails, and the record of it.

The ladders are data: `LADDERS` maps an error kind to its steps, and
`LOWER_PRECISION` says which precision each engine can step down to. The
fallback chain and the request handlers apply the steps; every step taken is
recorded for the request (the `x-inferrelay-remediation` header), logged, and
counted for the runtime's stats.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from enum import Enum

from inferrelay.errors import ErrorKind
from inferrelay.observe import tracing

log = logging.getLogger(__name__)


class Step(str, Enum):
    SMALLER_BATCH = "smaller_batch"  # split the request's batch in two, down to one input
    LOWER_PRECISION = "lower_precision"  # reload the model in the engine's next lower precision
    CPU = "cpu"  # reload the model on the CPU
    NEXT_ENGINE = "next_engine"  # the next engine of the model's chain
    SKIP_ENGINE = "skip_engine"  # the engine cannot run here: skip it, saying what would fix it


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


@dataclass(frozen=True)
class Remedy:
    model: str
    backend: str
    step: Step
    detail: str

    def header(self) -> str:
        return f"{self.backend}:{self.step.value}({self.detail})"


TAKEN: Counter[tuple[str, str]] = Counter()
"""(model, step) -> how many times, since the server started."""

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
    TAKEN[(model, step.value)] += 1
    if tracing.enabled():
        from opentelemetry import trace

        trace.get_current_span().add_event("remediation", {"step": step.value, "backend": backend, "detail": detail})
    log.warning("remediation for %s on %s: %s (%s)", model, backend, step.value, detail)
    return remedy


def header(remedies: list[Remedy]) -> str:
    return ";".join(r.header() for r in remedies)
