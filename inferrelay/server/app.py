"""The FastAPI app factory: everything the routes need hangs off `app.state.relay`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from inferrelay import __version__
from inferrelay.config.embedded import embedded_models
from inferrelay.config.schema import Settings
from inferrelay.engines.registry import EngineRegistry
from inferrelay.routing.fallback import FallbackChain
from inferrelay.routing.resolve import Resolver
from inferrelay.routing.router import StepRouter
from inferrelay.routing.stats import DeploymentBook
from inferrelay.runtime.catalog import ModelCatalog
from inferrelay.runtime.pool import ModelPool
from inferrelay.runtime.registry import ModelRegistry
from inferrelay.server.errors import install_error_handlers
from inferrelay.server.management_routes import router as management_router
from inferrelay.server.openai_routes import router as openai_router
from inferrelay.server.relay import Relay
from inferrelay.server.runtime_routes import router as runtime_router


def create_app(settings: Settings, registry: EngineRegistry | None = None) -> FastAPI:
    registry = registry or EngineRegistry.discover()
    models = ModelRegistry(settings.home)
    models.seed(embedded_models())
    catalog = ModelCatalog(settings.models, models)
    pool = ModelPool(settings.home, settings.load_retry_after_s, settings.runtime)
    chain = FallbackChain(settings, registry, pool)
    book = DeploymentBook()
    step_router = StepRouter(settings, book=book, catalog=catalog)
    resolver = Resolver(settings, book, catalog=catalog)
    relay = Relay(settings, registry, pool, chain, resolver, step_router, catalog)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        background = [asyncio.create_task(step_router.watch_health()), asyncio.create_task(pool.reap_forever())]
        yield
        for task in background:
            task.cancel()
        await step_router.aclose()
        pool.close()
        models.close()

    app = FastAPI(title="inferrelay", version=__version__, lifespan=lifespan)
    app.state.relay = relay
    install_error_handlers(app)
    app.include_router(openai_router)
    app.include_router(management_router)
    app.include_router(runtime_router)
    return app
