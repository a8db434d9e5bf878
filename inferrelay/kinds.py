"""The error kinds and what each one means for a request: its status, whether the walk falls back, its hint.

A leaf: errors.py (the exception and `classify`) and error_rules.py (the table
of foreign exceptions) both read it, and neither imports the other's users.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


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
    OVERLOADED = "overloaded"
    UPSTREAM_ERROR = "upstream_error"
    ENGINE_CRASHED = "engine_crashed"
    UNSUPPORTED = "unsupported"
    ALL_BACKENDS_FAILED = "all_backends_failed"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
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
    ErrorKind.OVERLOADED: KindPolicy(
        429,
        "rate_limit_error",
        True,
        "The queue is full: retry after Retry-After seconds, raise the model's max_queue (a provider's "
        "max_in_flight), or add a fallback step.",
    ),
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
    ErrorKind.UNAUTHORIZED: KindPolicy(
        401,
        "invalid_request_error",
        False,
        "Send a key as 'Authorization: Bearer KEY' (or x-api-key); an operator makes one with "
        "'inferrelay keys create NAME'.",
        code="invalid_api_key",  # OpenAI's
    ),
    ErrorKind.FORBIDDEN: KindPolicy(
        403, "invalid_request_error", False, "This key may not do this; an operator can make a key that may."
    ),
    ErrorKind.INTERNAL: KindPolicy(500, "server_error", True, "An unexpected error; the server log has the traceback."),
}
