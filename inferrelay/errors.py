"""The error taxonomy: every failure gets one kind, one policy and one hint.

Engines, the fallback walk and the server all raise or translate into
`InferrelayError`; `classify` is the one place that turns a foreign exception
into a kind, and the server maps a kind to OpenAI's error body.
"""

from __future__ import annotations

import logging
import signal
from collections import Counter
from dataclasses import dataclass
from enum import Enum
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KindPolicy:
    status: int
    error_type: str
    falls_back: bool
    hint: str
    code: str | None = None
    """OpenAI's `code` for this kind, where OpenAI's clients look for one; else the kind's own name."""


class ErrorKind(str, Enum):
    BAD_REQUEST = "bad_request"
    CONTEXT_LENGTH = "context_length"
    MODEL_NOT_FOUND = "model_not_found"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    DEPENDENCY_MISSING = "dependency_missing"
    ENGINE_UNAVAILABLE = "engine_unavailable"
    MODEL_LOAD_FAILED = "model_load_failed"
    OUT_OF_MEMORY = "out_of_memory"
    COOLING_DOWN = "cooling_down"
    TRANSIENT = "transient"
    TIMEOUT = "timeout"
    RATE_LIMITED = "rate_limited"
    UPSTREAM_ERROR = "upstream_error"
    ENGINE_CRASHED = "engine_crashed"
    UNSUPPORTED = "unsupported"
    ALL_BACKENDS_FAILED = "all_backends_failed"
    INTERNAL = "internal"

    @property
    def policy(self) -> KindPolicy:
        return POLICIES[self]


POLICIES: dict[ErrorKind, KindPolicy] = {
    ErrorKind.BAD_REQUEST: KindPolicy(
        400, "invalid_request_error", False, "Fix the request: the message names the field."
    ),
    ErrorKind.CONTEXT_LENGTH: KindPolicy(
        400,
        "invalid_request_error",
        False,
        "Shorten the prompt or lower max_tokens to fit the model's context window.",
        code="context_length_exceeded",  # OpenAI's; LangChain maps it to ContextOverflowError
    ),
    ErrorKind.MODEL_NOT_FOUND: KindPolicy(
        404, "invalid_request_error", False, "GET /v1/models lists the models served here."
    ),
    ErrorKind.NOT_FOUND: KindPolicy(404, "invalid_request_error", False, "Check the name in the path."),
    ErrorKind.CONFLICT: KindPolicy(
        409, "invalid_request_error", False, "The name is taken: choose another or remove the existing one."
    ),
    ErrorKind.DEPENDENCY_MISSING: KindPolicy(
        503, "server_error", True, "Install the missing library (the message says which)."
    ),
    ErrorKind.ENGINE_UNAVAILABLE: KindPolicy(
        503, "server_error", True, "This engine cannot run here; the next engine of the chain is used."
    ),
    ErrorKind.MODEL_LOAD_FAILED: KindPolicy(
        503,
        "server_error",
        True,
        "Check that the model file is complete and in a format this engine reads.",
    ),
    ErrorKind.OUT_OF_MEMORY: KindPolicy(
        503, "server_error", True, "Free memory, use a smaller model or a lower precision."
    ),
    ErrorKind.COOLING_DOWN: KindPolicy(
        503, "server_error", True, "This backend failed repeatedly; it gets a probe request after its cooldown."
    ),
    ErrorKind.TRANSIENT: KindPolicy(503, "server_error", True, "Retry; the failure was temporary."),
    ErrorKind.TIMEOUT: KindPolicy(504, "server_error", True, "Raise the timeout or use a faster backend."),
    ErrorKind.RATE_LIMITED: KindPolicy(429, "rate_limit_error", True, "Slow down or raise the backend's rate limit."),
    ErrorKind.UPSTREAM_ERROR: KindPolicy(
        502, "server_error", True, "The backend answered with an error; see its message."
    ),
    ErrorKind.ENGINE_CRASHED: KindPolicy(
        503,
        "server_error",
        True,
        "The engine's worker process died (the message names the signal); the next request restarts it.",
    ),
    ErrorKind.UNSUPPORTED: KindPolicy(
        400,
        "invalid_request_error",
        True,
        "No step of this model's route can honour the parameter named; drop it, or route the model to a step "
        "that can (a remote provider receives the request as sent).",
    ),
    ErrorKind.ALL_BACKENDS_FAILED: KindPolicy(
        503, "server_error", False, "Every engine of the chain failed; each reason is listed."
    ),
    ErrorKind.INTERNAL: KindPolicy(500, "server_error", True, "An unexpected error; the server log has the traceback."),
}


class InferrelayError(Exception):
    """A classified failure, shaped like OpenAI's error body."""

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        param: str | None = None,
        hint: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.param = param
        self.hint = hint or kind.policy.hint
        self.retry_after = retry_after

    @property
    def status(self) -> int:
        return self.kind.policy.status

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.kind.policy.error_type,
                "param": self.param,
                "code": self.kind.policy.code or self.kind.value,
                "hint": self.hint,
            }
        }


class ModelScopedError(InferrelayError):
    """A failure of one engine for one model (a worker that cannot start on it): the engine stays available for
    the other models, where the plain kind would mark the whole engine unavailable."""


def bad_request(message: str, param: str | None = None) -> InferrelayError:
    return InferrelayError(ErrorKind.BAD_REQUEST, message, param=param)


def dependency_missing(library: str, install: str, cause: object = "not installed") -> InferrelayError:
    return InferrelayError(
        ErrorKind.DEPENDENCY_MISSING, f"{library} cannot be imported ({cause})", hint=f"pip install {install}"
    )


UNCLASSIFIED: Counter[str] = Counter()
"""Exception types that reached `internal`, by module and name: the runtime's stats show them, so
each one can get its own rule in error_rules.py."""


def classify(exc: BaseException, *, loading: bool = False) -> InferrelayError:
    """Give any exception its kind and hint (error_rules.RULES); `loading` says it happened while loading a model."""
    from inferrelay.error_rules import match

    if isinstance(exc, InferrelayError):
        return exc
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, ImportError):
        name = getattr(exc, "name", None)
        hint = f"pip install {name.split('.')[0]}" if name else "install the library the message names"
        return InferrelayError(ErrorKind.DEPENDENCY_MISSING, text, hint=hint)
    rule = match(exc, text, loading)
    if rule is not None:
        return InferrelayError(rule.kind, text, hint=rule.hint)
    if loading:
        return InferrelayError(ErrorKind.MODEL_LOAD_FAILED, text)
    UNCLASSIFIED[f"{type(exc).__module__}.{type(exc).__qualname__}"] += 1
    log.error("unclassified exception %s", type(exc).__name__, exc_info=exc)
    return InferrelayError(ErrorKind.INTERNAL, f"internal error: {text[:300]}")


def death_of(returncode: int | None) -> str:
    """How a child process ended: 'SIGSEGV (segmentation fault)', 'exit code 3', or an unknown cause."""
    if returncode is None:
        return "an unknown cause (its socket closed)"
    if returncode < 0:
        description = signal.strsignal(-returncode) or "no description"
        return f"{signal_name(returncode)} ({description.lower()})"
    return f"exit code {returncode}"


def signal_name(returncode: int | None) -> str:
    """SIGILL, SIGKILL, ... for a process a signal ended; 'exit' for one that exited."""
    if returncode is not None and returncode < 0:
        try:
            return signal.Signals(-returncode).name
        except ValueError:
            return f"signal {-returncode}"
    return "exit"
