"""The key of the request being served, for code far from the door (the gateway's model check, the observer's
usage per key). Set by the key gate (server/auth.py) for the request's task; None when no key is in use."""

from __future__ import annotations

from contextvars import ContextVar

from inferrelay.access.keys import Key
from inferrelay.errors import ErrorKind, InferrelayError

current: ContextVar[Key | None] = ContextVar("inferrelay_caller", default=None)


def check_model(model: str) -> None:
    """403 when the caller's key may not use `model` (the name as asked)."""
    key = current.get()
    if key is not None and not key.may_use(model):
        raise InferrelayError(
            ErrorKind.FORBIDDEN,
            f"key {key.name!r} may not use model {model!r}; GET /v1/models lists the models it may use",
            param="model",
            code="model_not_allowed",
        )


def visible(model: str) -> bool:
    key = current.get()
    return key is None or key.may_use(model)
