"""What one request asks for beyond plain text, computed once, and which steps can give it.

A remote provider honours everything (it receives the request as the caller
sent it), except the fields its configuration refuses. A local engine
honours what its class declares (`Engine.honours`). A step that cannot
honour the request is skipped with the attempt kind `unsupported`; only when
no step can is the answer a 400, naming the parameter and every step.
"""

from __future__ import annotations

from dataclasses import dataclass

from inferrelay.engines.base import Feature
from inferrelay.errors import ErrorKind, InferrelayError


@dataclass(frozen=True)
class Need:
    param: str  # the request's parameter, as the caller named it
    what: str  # what it asks, in words
    features: frozenset[Feature] | None  # what a local engine must honour; None: no local engine can


@dataclass(frozen=True)
class Needs:
    items: tuple[Need, ...] = ()

    def local_gap(self, engine: str, honours: frozenset[Feature]) -> InferrelayError | None:
        """Why `engine` cannot serve this request, or None when it can."""
        for need in self.items:
            if need.features is None or not need.features <= honours:
                return unsupported(f"local/{engine} cannot honour {need.param} ({need.what})", need.param)
        return None

    def remote_gap(self, provider: str, refused: list[str]) -> InferrelayError | None:
        for need in self.items:
            if need.param in refused:
                return unsupported(f"provider {provider!r} refuses {need.param} (its refuse_fields)", need.param)
        return None


NOTHING = Needs()


def unsupported(message: str, param: str) -> InferrelayError:
    return InferrelayError(ErrorKind.UNSUPPORTED, message, param=param)
