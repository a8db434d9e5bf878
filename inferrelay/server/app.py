"""The FastAPI app factory: everything the routes need hangs off `app.state.relay`."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from inferrelay import __version__
from inferrelay.access.keys import KeyStore
from inferrelay.access.quota import KeyQuota
from inferrelay.access.usage import spent_by_key
from inferrelay.config.embedded import embedded_models
from inferrelay.config.schema import Settings
from inferrelay.console.routes import install_console
from inferrelay.engines.registry import EngineRegistry
from inferrelay.observe import tracing
from inferrelay.observe.metrics import Live, LiveCollector, Metrics
from inferrelay.observe.requestlog import RequestLog
from inferrelay.observe.requests import Observer
from inferrelay.routing.fallback import FallbackChain
from inferrelay.routing.gateway import Gateway
from inferrelay.routing.resolve import Resolver
from inferrelay.routing.router import StepRouter
from inferrelay.routing.stats import DeploymentBook
from inferrelay.runtime.autotune import AutoTune
from inferrelay.runtime.catalog import ModelCatalog
from inferrelay.runtime.pool import ModelPool
from inferrelay.runtime.registry import ModelRegistry
from inferrelay.server.auth import KeyGate
from inferrelay.server.body_limit import BodyLimit
from inferrelay.server.door import check_request
from inferrelay.server.draining import drain_on_sigterm
from inferrelay.server.errors import install_error_handlers
from inferrelay.server.keys_routes import router as keys_router
from inferrelay.server.management_routes import router as management_router
from inferrelay.server.metrics_routes import router as metrics_router
from inferrelay.server.openai_routes import router as openai_router
from inferrelay.server.openapi import install_openapi
from inferrelay.server.relay import Relay
from inferrelay.server.runtime_routes import router as runtime_router
from inferrelay.server.slow_clients import BodyDeadline
from inferrelay.state.choose import open_state


def create_app(settings: Settings, registry: EngineRegistry | None = None) -> FastAPI:
    registry = registry or EngineRegistry.discover()
    tracing.configure()  # on only when the OTEL_* variables ask for it
    models = ModelRegistry(settings.home)
    models.seed(embedded_models())
    catalog = ModelCatalog(settings.models, models)
    pool = ModelPool(settings.home, settings.load_retry_after_s, settings.runtime)
    chain = FallbackChain(settings, registry, pool)
    book = DeploymentBook()
    runtime = settings.runtime
    state = open_state(runtime.state, runtime.state_failure, os.environ)  # in process, or Redis (docs/scaling.md)
    step_router = StepRouter(settings, book=book, catalog=catalog, state=state)
    resolver = Resolver(settings, book, catalog=catalog)
    request_log = RequestLog(settings.home, runtime.request_log_retention) if runtime.request_log else None
    metrics = Metrics() if runtime.metrics else None
    observer = Observer(metrics, request_log)
    tuner = AutoTune(catalog, settings.home, runtime.tune_seconds, enabled=runtime.tune == "auto")
    gateway = Gateway(resolver, step_router, chain, tuner)
    keys = KeyStore(settings.home)
    quota = KeyQuota(lambda: spent_by_key(settings.home), state=state)  # shared with the state's servers
    observer.spend = quota.spend
    observer.known_model = lambda name: name in resolver.exposed()  # metrics label other names `unknown`
    relay = Relay(settings, registry, pool, chain, resolver, step_router, catalog, observer, gateway, keys, quota)
    if metrics is not None:
        metrics.registry.register(LiveCollector(lambda: live_state(relay)))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        background = [asyncio.create_task(step_router.watch_health()), asyncio.create_task(pool.reap_forever())]
        background.append(asyncio.create_task(step_router.share_in_flight()))  # with Redis only (docs/scaling.md)
        if request_log is not None:
            request_log.prune()
            request_log.start()
        app.state.serving = True  # GET /ready: ready only between start-up and shutdown (or a SIGTERM)
        undrain = drain_on_sigterm(app, runtime.drain_grace)
        yield
        undrain()
        app.state.serving = False
        for task in background:
            task.cancel()
        if request_log is not None:
            await request_log.close()  # every answered request is in the log before the process exits
        await step_router.aclose()
        pool.close()
        models.close()

    door = [Depends(check_request)]  # text and counts checked on the parsed body, before validation (server/door.py)
    app = FastAPI(title="inferrelay", version=__version__, lifespan=lifespan, dependencies=door)
    app.state.relay = relay
    install_error_handlers(app)
    app.add_middleware(KeyGate, store=keys, quota=quota, metrics_need_key=runtime.metrics_need_key)
    app.add_middleware(BodyLimit, max_bytes=runtime.limits.max_body_bytes)  # outermost: refused before auth
    app.include_router(openai_router)
    app.include_router(management_router)
    app.include_router(runtime_router)
    app.include_router(metrics_router)
    app.include_router(keys_router)
    if runtime.console:
        install_console(app)  # /ui and the read-only JSON it reads (docs/console.md)
    app.add_middleware(BodyDeadline, timeout=runtime.connections.body_timeout)
    install_openapi(app)
    return app


def live_state(relay: Relay) -> Live:
    live = Live(in_flight=relay.observer.running)
    for name in relay.router.clients:
        live.cooling_down[name] = relay.router.cooldowns.cooling(name)
    for slot in relay.pool.loaded():
        waiting, running = live.queues.get(slot.spec.name, (0, 0))
        live.queues[slot.spec.name] = (waiting + slot.waiting, running + slot.running)
        calls, requests = live.batches.get(slot.spec.name, (0, 0))
        live.batches[slot.spec.name] = (calls + slot.batches, requests + slot.batched_requests)
        device = slot.placement.device
        live.models_loaded[device] = live.models_loaded.get(device, 0) + 1
        live.memory_held[device] = live.memory_held.get(device, 0) + slot.placement.charged_bytes
    return live
