"""What a walk ends with: the answer and how it was reached (attempts, remedies), or the failure with the same.

A leaf: observability and the server read these types; they depend on nothing but the error kinds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Generic, TypeVar

from inferrelay.errors import ErrorKind, InferrelayError

T = TypeVar("T")


class Step(str, Enum):
    """A rung of a remediation ladder (runtime/remediation.py)."""

    SMALLER_BATCH = "smaller_batch"  # split the request's batch in two, down to one input
    LOWER_PRECISION = "lower_precision"  # reload the model in the engine's next lower precision
    CPU = "cpu"  # reload the model on the CPU
    NEXT_ENGINE = "next_engine"  # the next engine of the model's chain
    SKIP_ENGINE = "skip_engine"  # the engine cannot run here: skip it, saying what would fix it


@dataclass(frozen=True)
class Remedy:
    """One remediation step taken for a request."""

    model: str
    backend: str
    step: Step
    detail: str

    def header(self) -> str:
        return f"{self.backend}:{self.step.value}({self.detail})"


def remedies_header(remedies: list[Remedy]) -> str:
    """`x-inferrelay-remediation`: each step taken, in order."""
    return ";".join(r.header() for r in remedies)


@dataclass(frozen=True)
class Attempt:
    """A step of the walk that did not answer, and why."""

    backend: str
    kind: ErrorKind
    reason: str
    hint: str
    retry_after: float | None = None
    param: str | None = None
    origin: str | None = None  # the exception type, for an error no rule classified

    @classmethod
    def of(cls, backend: str, error: InferrelayError) -> Attempt:
        return cls(backend, error.kind, error.message, error.hint, error.retry_after, error.param, error.origin)

    def describe(self) -> str:
        return f"{self.backend}: {self.kind.value}: {self.reason} (hint: {self.hint})"


def attempts_header(attempts: list[Attempt]) -> str:
    """`x-inferrelay-attempts`: each failed attempt before the answer, with its kind."""
    return ",".join(f"{a.backend}={a.kind.value}" for a in attempts)


@dataclass
class Served(Generic[T]):
    """An answer, the backend that gave it, the attempts before it and the remedies taken on the way."""

    result: T
    backend: str
    attempts: list[Attempt] = field(default_factory=list)
    remedies: list[Remedy] = field(default_factory=list)


class ChainFailed(InferrelayError):
    """The end of a walk with no answer; carries every attempt for the headers and the message."""

    def __init__(self, error: InferrelayError, attempts: list[Attempt]) -> None:
        super().__init__(error.kind, error.message, param=error.param, hint=error.hint, retry_after=error.retry_after)
        self.origin = error.origin
        self.attempts = attempts
        self.remedies: list[Remedy] = []


BUSY_KINDS = frozenset({ErrorKind.RATE_LIMITED, ErrorKind.OVERLOADED})
"""A step that is only busy: the same request can succeed there later."""


def chain_failure(subject: str, noun: str, attempts: list[Attempt]) -> InferrelayError:
    """The end of a walk with no answer: `unsupported` (a 400) when no step could honour the request, naming the
    parameter and every step; a 429 with the shortest wait when every step that could was only busy
    (`rate_limited` when all were at a rate limit, else `overloaded`); else every step failed (a 503), each
    reason listed."""
    lines = "; ".join(a.describe() for a in attempts)
    if attempts and all(a.kind is ErrorKind.UNSUPPORTED for a in attempts):
        return InferrelayError(
            ErrorKind.UNSUPPORTED,
            f"no {noun} for {subject} can honour this request: {lines}",
            param=attempts[0].param,
        )
    busy = [a for a in attempts if a.kind in BUSY_KINDS]
    if busy and all(a.kind in BUSY_KINDS or a.kind is ErrorKind.UNSUPPORTED for a in attempts):
        wait = min(a.retry_after or 1.0 for a in busy)
        if all(a.kind is ErrorKind.RATE_LIMITED for a in busy):
            message = f"rate limit reached for {subject}: {lines}"
            return InferrelayError(ErrorKind.RATE_LIMITED, message, retry_after=wait)
        return InferrelayError(ErrorKind.OVERLOADED, f"every {noun} for {subject} is busy: {lines}", retry_after=wait)
    return InferrelayError(ErrorKind.ALL_BACKENDS_FAILED, f"every {noun} for {subject} failed: {lines}")
