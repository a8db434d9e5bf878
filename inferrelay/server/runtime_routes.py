"""The runtime's management API: register, load, unload, inspect, generate, health and stats."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import Field, ValidationError, model_validator

from inferrelay.config.schema import ModelSpec
from inferrelay.config.strict import Strict
from inferrelay.config.units import Duration
from inferrelay.engines.base import Capability
from inferrelay.errors import ErrorKind, InferrelayError, bad_request
from inferrelay.outcome import attempts_header
from inferrelay.runtime.pool import ModelPool
from inferrelay.runtime.registration import RegisterRequest, registration_spec
from inferrelay.server.openai_routes import generate
from inferrelay.server.relay import Relay, relay_of
from inferrelay.server.schemas import ChatCompletionRequest, CompletionRequest

router = APIRouter(prefix="/api/v1/runtime")
STARTED = time.monotonic()


class LoadRequest(Strict):
    name: str = Field(min_length=1)
    keep_alive: Duration | None = None


class UnloadRequest(Strict):
    name: str = Field(min_length=1)


class GenerateRequest(Strict):
    """One prompt or one conversation; answered in OpenAI's completion or chat shape."""

    model: str = Field(min_length=1)
    prompt: str | None = None
    messages: list[dict[str, Any]] | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0, le=2)
    top_p: float = Field(default=1.0, gt=0, le=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    keep_alive: Duration | None = None

    @model_validator(mode="after")
    def _prompt_or_messages(self) -> GenerateRequest:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of prompt or messages")
        return self


def _spec(relay: Relay, name: str) -> ModelSpec:
    spec = relay.catalog.get(name)
    if spec is None:
        known = ", ".join(relay.catalog.names())
        raise InferrelayError(ErrorKind.MODEL_NOT_FOUND, f"no model named {name!r} (known: {known})", param="name")
    return spec


def model_view(relay: Relay, spec: ModelSpec, pool: ModelPool) -> dict[str, Any]:
    """A model as the runtime sees it: its registration, its state, and each engine it is loaded on."""
    now = time.monotonic()
    loaded = pool.loaded(spec.name)
    failure = pool.failure(spec.name)
    if loaded:
        state = "loaded"
    elif pool.loading(spec.name) or pool.unloading(spec.name):
        state = "loading" if pool.loading(spec.name) else "unloading"
    else:
        state = "failed" if failure else "unloaded"
    registration = relay.catalog.registration(spec.name)
    return {
        **spec.model_dump(mode="json"),
        "declared_by": "configuration" if relay.catalog.declared(spec.name) else "registry",
        "registered_at": registration.created_at.isoformat() if registration else None,
        "state": state,
        "loaded": [slot.describe(now) for slot in loaded],
        "queue": {  # summed over the loaded engines; max_queue and parallel hold for each of them
            "waiting": sum(slot.waiting for slot in loaded),
            "running": sum(slot.running for slot in loaded),
            "max_queue": pool.max_queue(spec),
            "parallel": max((slot.parallel for slot in loaded), default=1),
            "batches": sum(slot.batches for slot in loaded),  # embeddings: calls that served several requests
            "batched_requests": sum(slot.batched_requests for slot in loaded),
        },
        "last_failure": {"kind": failure.kind.value, "message": failure.message} if failure and not loaded else None,
        "events": [e.as_dict() for e in pool.events if e.model == spec.name][-10:],
        "workers": pool.crashes.status(spec.name),
        "tuning": tuning_view(relay, spec.name),
    }


def tuning_view(relay: Relay, name: str) -> dict[str, Any]:
    """What `inferrelay tune` measured for the model here, and whether it orders the chain."""
    book = relay.catalog.tunings
    rows = [t.view() for t in book.of(name)] if book else []
    return {"chain_from": "configuration" if relay.catalog.pinned(name) else "tuning" if any(
        not r["stale"] for r in rows) else "defaults", "measured": rows}  # fmt: skip


@router.post("/models/register", status_code=201)
async def register(body: RegisterRequest, request: Request) -> dict[str, Any]:
    relay = relay_of(request)
    if body.name in relay.catalog:
        raise InferrelayError(
            ErrorKind.CONFLICT, f"a model named {body.name!r} is already registered; choose another name", param="name"
        )
    unknown = [name for name in body.engines or () if name not in relay.registry.names()]
    if unknown:
        known = ", ".join(relay.registry.names())
        raise bad_request(f"engines: no engine named {unknown[0]!r} (known: {known})", param="engines")
    spec = await asyncio.to_thread(registration_spec, body, relay.settings.runtime.roots(relay.settings.home))
    registration = relay.catalog.register(spec)
    return {**model_view(relay, spec, relay.pool), "registered_at": registration.created_at.isoformat()}


@router.post("/models/load")
async def load(body: LoadRequest, request: Request) -> JSONResponse:
    """Load now (walking the engine chain as a request would), instead of on the first request."""
    relay = relay_of(request)
    spec = _spec(relay, body.name)

    async def describe(slot: Any) -> dict[str, Any]:
        return dict(slot.describe(time.monotonic()))

    served = await relay.chain.serve(spec, spec.capabilities[0], describe, body.keep_alive)
    headers = {"x-inferrelay-backend": served.backend, "x-inferrelay-attempts": attempts_header(served.attempts)}
    return JSONResponse({"name": spec.name, **served.result}, headers=headers)


@router.post("/models/unload")
async def unload(body: UnloadRequest, request: Request) -> dict[str, Any]:
    relay = relay_of(request)
    spec = _spec(relay, body.name)
    events = await relay.pool.unload(spec.name)
    return {
        "name": spec.name,
        "state": "unloaded",
        "unloaded": [e.as_dict() for e in events],
        "freed_bytes": sum(e.freed_bytes or 0 for e in events),
    }


@router.get("/models")
async def list_models(request: Request) -> dict[str, Any]:
    relay = relay_of(request)
    specs = [relay.catalog.get(name) for name in relay.catalog.names()]
    return {"models": [model_view(relay, spec, relay.pool) for spec in specs if spec is not None]}


@router.get("/models/{name}")
async def show_model(name: str, request: Request) -> dict[str, Any]:
    relay = relay_of(request)
    return model_view(relay, _spec(relay, name), relay.pool)


@router.get("/models/{name}/doctor")
async def doctor_model(name: str, request: Request) -> dict[str, Any]:
    """The doctor's report on a served model's source (as `inferrelay doctor PATH --json`)."""
    from inferrelay.config.sources import PACKAGE_PREFIX, resolve_source
    from inferrelay.doctor.report import diagnose

    relay = relay_of(request)
    spec = _spec(relay, name)
    if spec.source.startswith(PACKAGE_PREFIX):
        path = resolve_source(spec.source).path
    else:
        path = Path(spec.source).expanduser()
    candidates = [s for other in relay.catalog.names() if (s := relay.catalog.get(other)) is not None]
    report = await asyncio.to_thread(diagnose, path, relay.registry, candidates, spec.context_length)
    return {"model": name, **report.as_dict()}


@router.post("/generate")
async def runtime_generate(body: GenerateRequest, request: Request) -> Any:
    """Generation through the model's engine chain; the answer is OpenAI's completion (or chat) shape."""
    fields = body.model_dump(exclude_none=True, exclude={"prompt", "messages"})
    try:
        parsed: ChatCompletionRequest | CompletionRequest = (
            ChatCompletionRequest.model_validate({**fields, "messages": body.messages})
            if body.messages is not None
            else CompletionRequest.model_validate({**fields, "prompt": body.prompt})
        )
    except ValidationError as exc:  # a malformed message is the caller's: a 400 naming it, as the OpenAI routes say
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise bad_request(f"{field}: {first['msg']}", param=field) from exc
    capability = Capability.CHAT if isinstance(parsed, ChatCompletionRequest) else Capability.COMPLETION
    return await generate(request, parsed, capability)


@router.get("/health")
async def runtime_health(request: Request) -> dict[str, Any]:
    relay = relay_of(request)
    engines = relay.registry.snapshot()
    return {
        "status": "ok",
        "uptime_s": round(time.monotonic() - STARTED, 1),
        "models_loaded": len(relay.pool.loaded()),
        "engines_available": sorted(e["name"] for e in engines if e.get("available")),
    }


@router.get("/stats")
async def runtime_stats(request: Request) -> dict[str, Any]:
    """Per model: state, engine, device, memory estimated and measured, load time, use, queue (waiting, running,
    max_queue, parallel), keep_alive deadline."""
    relay = relay_of(request)
    pool = relay.pool
    devices: dict[str, dict[str, Any]] = {}
    for slot in pool.loaded():
        device = devices.setdefault(slot.placement.device, {"models": 0, "measured_bytes": 0, "charged_bytes": 0})
        device["models"] += 1
        device["measured_bytes"] += slot.placement.held_bytes
        device["charged_bytes"] += slot.placement.charged_bytes
    for name, device in devices.items():
        device["budget_bytes"] = relay.settings.runtime.memory_budget.get(name.split(":")[0])
        device["room_bytes"] = pool.room(name)
    specs = [relay.catalog.get(name) for name in relay.catalog.names()]
    remedies: dict[str, dict[str, int]] = {}
    for (model, step), count in sorted(relay.observer.remedies_taken.items()):
        remedies.setdefault(model, {})[step] = count
    return {
        "loads": pool.loads,
        "devices": devices,
        "models": {spec.name: model_view(relay, spec, pool) for spec in specs if spec is not None},
        "remediation": remedies,
        "unclassified_errors": dict(relay.observer.unclassified),
        "cancelled": dict(relay.observer.cancellations),
        "timed_out": dict(relay.observer.timeouts),
        "requests": await asyncio.to_thread(_request_aggregates, relay.settings.home),
    }


def _request_aggregates(home: Path) -> list[dict[str, Any]]:
    """From the request log: per model and backend, requests, errors, p50/p95 latency and tokens."""
    from inferrelay.observe.queries import aggregate, open_log

    db = open_log(home)
    if db is None:
        return []
    try:
        return aggregate(db)
    finally:
        db.close()
