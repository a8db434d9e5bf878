"""Liveness, readiness and engine status."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from inferrelay.errors import ErrorKind, InferrelayError
from inferrelay.server.relay import relay_of

router = APIRouter()


@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready")
async def ready(request: Request) -> JSONResponse:
    """Whether new work is taken now (docs/api.md): 503 with the reasons while the app is starting or stopping,
    or while a loaded model's queue is full. Remote providers do not count: the walk skips them on its own."""
    reasons = [] if getattr(request.app.state, "serving", False) else ["the server is starting or shutting down"]
    queues = []
    for slot in relay_of(request).pool.loaded():
        queue = {"model": slot.spec.name, "engine": slot.placement.engine, **slot.queue()}
        queues.append(queue)
        if slot.full:
            reasons.append(
                f"{slot.spec.name} on {slot.placement.engine}: queue full ({slot.running} running, "
                f"{slot.waiting} waiting, max_queue {slot.max_queue})"
            )
    body = {"ready": not reasons, "reasons": reasons, "queues": queues}
    return JSONResponse(body, status_code=503 if reasons else 200)


@router.get("/api/v1/engines")
async def engines(request: Request, refresh: bool = False) -> dict[str, Any]:
    """Each engine's status; `?refresh=true` probes again (a library installed since start-up)."""
    registry = relay_of(request).registry
    if refresh:
        return {"engines": await asyncio.to_thread(registry.snapshot, True)}
    return {"engines": registry.snapshot()}


@router.get("/api/v1/providers")
async def providers(request: Request) -> dict[str, Any]:
    """Each remote provider: health, cooldown, in-flight count, latency, last error; where the state lives."""
    router = relay_of(request).router
    return {"providers": await router.status(), "state": router.state.status()}


@router.get("/api/v1/engines/{name}")
async def engine(name: str, request: Request, refresh: bool = False) -> dict[str, Any]:
    registry = relay_of(request).registry
    state = await asyncio.to_thread(registry.reprobe, name) if refresh else registry.state(name)
    if state is None:
        known = ", ".join(registry.names())
        raise InferrelayError(ErrorKind.NOT_FOUND, f"no engine named {name!r} (known: {known})")
    result: dict[str, Any] = state.as_dict(name)
    return result
