"""What the routes share: settings, engines, loaded models, the observer and the gateway every request goes through."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from inferrelay.access.keys import KeyStore
from inferrelay.access.quota import KeyQuota
from inferrelay.config.schema import Settings
from inferrelay.engines.registry import EngineRegistry
from inferrelay.observe.requests import Observer
from inferrelay.routing.fallback import FallbackChain
from inferrelay.routing.gateway import Gateway
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
    gateway: Gateway
    keys: KeyStore
    quota: KeyQuota


def relay_of(request: Request) -> Relay:
    relay: Relay = request.app.state.relay
    return relay
