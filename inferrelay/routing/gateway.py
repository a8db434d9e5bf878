"""The one request path: a parsed request in, an answer (or a classified failure) out.

A route hands the gateway an `Order`: the model asked for, the capability,
what the request needs, and the work to do on whichever step answers (on a
loaded local model, or at a remote provider). The gateway resolves the name
to steps (routing/resolve.py), walks them (routing/router.py: remote retries,
cooldowns and limits), walks a local model's engines with their remediation
ladders (routing/fallback.py), and returns the outcome (outcome.py) with
every attempt and remedy. Routes only parse and shape HTTP.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from inferrelay.access import caller
from inferrelay.capabilities import Capability
from inferrelay.config.schema import ModelSpec
from inferrelay.errors import ErrorKind, InferrelayError
from inferrelay.outcome import Served
from inferrelay.providers.remote import RemoteClient
from inferrelay.routing.fallback import FallbackChain
from inferrelay.routing.needs import NOTHING, Needs
from inferrelay.routing.resolve import Resolver
from inferrelay.routing.router import StepRouter
from inferrelay.runtime.autotune import AutoTune
from inferrelay.runtime.slots import LoadedSlot

T = TypeVar("T")


def _reads_anything(model: str) -> None:
    return None


def _no_tokens() -> int:
    return 0


@dataclass(frozen=True)
class Order(Generic[T]):
    """One request as the gateway takes it."""

    model: str  # the name the caller asked for
    capability: Capability
    on_slot: Callable[[LoadedSlot], Awaitable[T]]  # the work on a loaded local model
    on_remote: Callable[[RemoteClient, str], Awaitable[T]]  # the same work asked of a provider, by its model name
    needs: Needs = NOTHING
    keep_alive: float | None = None  # the request's, replacing the serving model's
    readable: Callable[[str], None] = field(default=_reads_anything)  # refuses what a local model cannot read
    tokens: Callable[[], int] = field(default=_no_tokens)  # the request's size, asked where a tpm limit applies


class Gateway:
    def __init__(
        self, resolver: Resolver, router: StepRouter, chain: FallbackChain, tuner: AutoTune | None = None
    ) -> None:
        self.resolver = resolver
        self.router = router
        self.chain = chain
        self.tuner = tuner

    async def serve(self, order: Order[T]) -> Served[T]:
        caller.check_model(order.model)  # a key limited to other models: 403 before any work
        steps = self.resolver.resolve(order.model, order.capability)

        async def local(spec: ModelSpec) -> Served[T]:
            offers(spec, order.capability)
            order.readable(spec.name)
            if self.tuner is not None:  # runtime.tune: auto
                spec = await self.tuner.ensure(spec, loaded=bool(self.chain.loaded(spec.name)))
            return await self.chain.serve(spec, order.capability, order.on_slot, order.keep_alive, order.needs)

        return await self.router.serve(order.model, steps, local, order.on_remote, order.tokens, order.needs)


def offers(spec: ModelSpec, capability: Capability) -> None:
    """A local model asked for what it does not do is the caller's mistake."""
    if capability not in spec.capabilities:
        offered = ", ".join(c.value for c in spec.capabilities)
        raise InferrelayError(
            ErrorKind.BAD_REQUEST,
            f"model {spec.name!r} does not offer {capability.value} (it offers: {offered})",
            param="model",
        )
