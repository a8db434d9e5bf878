"""What the routes share: settings, engines, loaded models and the fallback chain."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from inferrelay.config.schema import ModelSpec, Settings
from inferrelay.engines.base import Capability
from inferrelay.engines.registry import EngineRegistry
from inferrelay.errors import ErrorKind, InferrelayError
from inferrelay.observe.requests import Observer
from inferrelay.routing.fallback import FallbackChain
from inferrelay.routing.resolve import Resolver
from inferrelay.routing.router import StepRouter
from inferrelay.runtime.catalog import ModelCatalog
from inferrelay.runtime.pool import ModelPool


@dataclass
class Relay:
    settings: Settings
    registry: EngineRegistry
    pool: ModelPool
    chain: FallbackChain
    resolver: Resolver
    router: StepRouter
    catalog: ModelCatalog
    observer: Observer

    def check_capability(self, spec: ModelSpec, capability: Capability) -> None:
        """A local model asked for what it does not do is the caller's mistake."""
        name = spec.name
        if capability not in spec.capabilities:
            offered = ", ".join(c.value for c in spec.capabilities)
            raise InferrelayError(
                ErrorKind.BAD_REQUEST,
                f"model {name!r} does not offer {capability.value} (it offers: {offered})",
                param="model",
            )


def relay_of(request: Request) -> Relay:
    relay: Relay = request.app.state.relay
    return relay
