"""The FastAPI app factory: everything the routes need hangs off `app.state.relay`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from inferrelay import __version__
from inferrelay.config.schema import Settings
from inferrelay.engines.registry import EngineRegistry
from inferrelay.routing.fallback import FallbackChain
from inferrelay.routing.pool import ModelPool
from inferrelay.routing.resolve import Resolver
from inferrelay.routing.router import StepRouter
from inferrelay.routing.stats import DeploymentBook
from inferrelay.server.errors import install_error_handlers
from inferrelay.server.management_routes import router as management_router
from inferrelay.server.openai_routes import router as openai_router
from inferrelay.server.relay import Relay


def create_app(settings: Settings, registry: EngineRegistry | None = None) -> FastAPI:
    registry = registry or EngineRegistry.discover()
    pool = ModelPool(settings.home, settings.load_retry_after_s)
    chain = FallbackChain(settings, registry, pool)
    book = DeploymentBook()
    step_router = StepRouter(settings, book=book)
    relay = Relay(settings, registry, pool, chain, Resolver(settings, book), step_router)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        health = asyncio.create_task(step_router.watch_health())
        yield
        health.cancel()
        await step_router.aclose()
        pool.close()

    app = FastAPI(title="inferrelay", version=__version__, lifespan=lifespan)
    app.state.relay = relay
    install_error_handlers(app)
    app.include_router(openai_router)
    app.include_router(management_router)
    return app
