"""Liveness and engine status."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request

from inferrelay.errors import ErrorKind, InferrelayError
from inferrelay.server.relay import relay_of

router = APIRouter()


@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/api/v1/engines")
async def engines(request: Request, refresh: bool = False) -> dict[str, Any]:
    """Each engine's status; `?refresh=true` probes again (a library installed since start-up)."""
    registry = relay_of(request).registry
    if refresh:
        return {"engines": await asyncio.to_thread(registry.snapshot, True)}
    return {"engines": registry.snapshot()}


@router.get("/api/v1/providers")
async def providers(request: Request) -> dict[str, Any]:
    """Each remote provider: health, cooldown, in-flight count, latency, last error."""
    return {"providers": relay_of(request).router.status()}


@router.get("/api/v1/engines/{name}")
async def engine(name: str, request: Request, refresh: bool = False) -> dict[str, Any]:
    registry = relay_of(request).registry
    state = await asyncio.to_thread(registry.reprobe, name) if refresh else registry.state(name)
    if state is None:
        known = ", ".join(registry.names())
        raise InferrelayError(ErrorKind.NOT_FOUND, f"no engine named {name!r} (known: {known})")
    result: dict[str, Any] = state.as_dict(name)
    return result
