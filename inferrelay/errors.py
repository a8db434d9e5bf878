"""The error taxonomy: every failure gets one kind, one policy and one hint.

Engines, the fallback walk and the server all raise or translate into
`InferrelayError`; `classify` is the one place that turns a foreign exception
into a kind, and the server maps a kind to OpenAI's error body.
"""

from __future__ import annotations

import logging
import signal
from typing import Any

from inferrelay.error_rules import match
from inferrelay.kinds import POLICIES, ErrorKind, KindPolicy

log = logging.getLogger(__name__)
__all__ = ["POLICIES", "ErrorKind", "InferrelayError", "KindPolicy", "classify"]


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
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code  # replaces the kind's code in the body where one kind has several causes
        self.kind = kind
        self.message = message
        self.param = param
        self.hint = hint or kind.policy.hint
        self.retry_after = retry_after
        self.origin: str | None = None  # the exception type, when no rule classified it (an `internal` error)

    @property
    def status(self) -> int:
        return self.kind.policy.status

    def body(self) -> dict[str, Any]:
        code = self.code or self.kind.policy.code or self.kind.value
        message = self.message
        if self.kind is ErrorKind.CONTEXT_LENGTH and code not in message:
            message = f"{message} ({code})"  # LangChain looks for the code in the text to raise ContextOverflowError
        return {
            "error": {
                "message": message,
                "type": self.kind.policy.error_type,
                "param": self.param,
                "code": code,
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


def classify(exc: BaseException, *, loading: bool = False) -> InferrelayError:
    """Give any exception its kind and hint (error_rules.RULES); `loading` says it happened while loading a model."""
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
    log.error("unclassified exception %s", type(exc).__name__, exc_info=exc)
    error = InferrelayError(ErrorKind.INTERNAL, f"internal error: {text[:300]}")
    error.origin = f"{type(exc).__module__}.{type(exc).__qualname__}"  # counted by the app's observer
    return error


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
