"""The API description (/openapi.json) as the server really answers: typed answers, OpenAI's error body with the
statuses each route can answer, text/event-stream for streams, and none of FastAPI's 422 (errors are 400 here).

FastAPI writes the requests' schemas; this module rewrites the responses once, from one table, so the routes stay
plain and a client or a fuzzer can check every answer against the description (docs/api.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from inferrelay.kinds import POLICIES
from inferrelay.server import answers as a

GENERATION_ERRORS = (404, 429, 502, 503, 504)
"""A request walked along a model's chain: an unknown model, full queues or rate limits, and the chain's failures."""
AUTH_ERRORS = (401, 403, 429)
"""The key gate (server/auth.py), once any key exists."""
BODY_ERRORS = (400, 408, 413)
"""A JSON body: invalid, sent too slowly (server/slow_clients.py) or too large."""
GATED_PREFIXES = ("/v1/", "/api/", "/metrics")
"""/metrics only with runtime.metrics_need_key, so its 401 is documented too."""
STREAMS = "server-sent events (`data: {chunk}` lines, then `data: [DONE]`) when the body says `stream: true`"
SSE_EVENT = {
    "type": "object",
    "description": "one server-sent event: `data` holds a JSON chunk (or `[DONE]`); `event` names the Responses "
    "API's event types",
    "properties": {"event": {"type": "string"}, "data": {"type": "string"}, "id": {"type": "string"}},
    "required": ["data"],
}
"""Open API 3.1 has a text/event-stream schema describe each event."""
CONNECTION_LIMIT = "uvicorn's plain `Service Unavailable` past runtime.connections.max_connections, on any route"
PLAIN_503 = {"text/plain": {"schema": {"type": "string"}}}
EXTRA_STATUSES = {
    408: "the request body did not arrive in time (runtime.connections.body_timeout); the connection is closed",
    413: "the request body is larger than the server accepts",
}


@dataclass(frozen=True)
class Answer:
    """What one operation answers: its success shape, the errors beyond the common ones, whether it streams."""

    shape: type[BaseModel] | tuple[type[BaseModel], ...] | None
    errors: tuple[int, ...] = ()
    streams: bool = False
    status: int = 200
    media_type: str = "application/json"


ANSWERS: dict[tuple[str, str], Answer] = {
    ("post", "/v1/chat/completions"): Answer(a.ChatCompletion, GENERATION_ERRORS, streams=True),
    ("post", "/v1/completions"): Answer(a.Completion, GENERATION_ERRORS, streams=True),
    ("post", "/v1/responses"): Answer(a.ResponseObject, GENERATION_ERRORS, streams=True),
    ("post", "/v1/embeddings"): Answer(a.EmbeddingList, GENERATION_ERRORS),
    ("get", "/v1/models"): Answer(a.ModelList),
    ("get", "/v1/models/{model_id}"): Answer(a.Model, (404,)),
    ("post", "/api/v1/runtime/models/register"): Answer(a.RuntimeModel, (409,), status=201),
    ("post", "/api/v1/runtime/models/load"): Answer(a.LoadedModel, (404, 503, 504)),
    ("post", "/api/v1/runtime/models/unload"): Answer(a.UnloadedModel, (404,)),
    ("get", "/api/v1/runtime/models"): Answer(a.RuntimeModels),
    ("get", "/api/v1/runtime/models/{name}"): Answer(a.RuntimeModel, (404,)),
    ("get", "/api/v1/runtime/models/{name}/doctor"): Answer(a.DoctorReport, (404,)),
    ("post", "/api/v1/runtime/generate"): Answer((a.Completion, a.ChatCompletion), GENERATION_ERRORS, streams=True),
    ("get", "/api/v1/runtime/health"): Answer(a.RuntimeHealth),
    ("get", "/api/v1/runtime/stats"): Answer(a.RuntimeStats),
    ("get", "/health"): Answer(a.Liveness),
    ("get", "/ready"): Answer(a.Readiness),
    ("get", "/api/v1/engines"): Answer(a.EngineList),
    ("get", "/api/v1/engines/{name}"): Answer(a.EngineStatus, (404,)),
    ("get", "/api/v1/providers"): Answer(a.ProviderList),
    ("get", "/api/v1/keys"): Answer(a.ApiKeyList),
    ("post", "/api/v1/keys"): Answer(a.NewApiKey, (409,), status=201),
    ("delete", "/api/v1/keys/{name}"): Answer(a.ApiKey, (404,)),
    ("get", "/api/v1/keys/{name}/usage"): Answer(a.KeyUsage, (404,)),
    ("get", "/metrics"): Answer(None, (404,), media_type="text/plain"),
}
"""Every operation the app serves; one missing here is described with an untyped object (tests check none is)."""


def install_openapi(app: FastAPI) -> None:
    """Replace FastAPI's generated description with `describe(app)`, built once on the first request for it."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = describe(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def describe(app: FastAPI) -> dict[str, Any]:
    schema = get_openapi(title=app.title, version=app.version, routes=app.routes, description=app.description)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    refs = _add_shapes(components)
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            answer = ANSWERS.get((method, path))
            operation["responses"] = _responses(path, operation, answer, refs)
    return schema


def _add_shapes(components: dict[str, Any]) -> dict[type[BaseModel], dict[str, Any]]:
    """The answers' models as components; FastAPI's request models keep theirs (a clash is a naming bug)."""
    shapes: set[type[BaseModel]] = {a.ErrorBody}
    shapes.update(model for answer in ANSWERS.values() for model in _models(answer.shape))
    ordered = sorted(shapes, key=lambda model: model.__name__)
    refs, defs = models_json_schema(
        [(shape, "serialization") for shape in ordered], ref_template="#/components/schemas/{model}"
    )
    for name, definition in defs.get("$defs", {}).items():
        if name in components and components[name] != definition:
            raise ValueError(f"the answer shape {name} clashes with a request model of the same name")
        components[name] = definition
    return {model: refs[(model, "serialization")] for model in ordered}


def _models(shape: type[BaseModel] | tuple[type[BaseModel], ...] | None) -> tuple[type[BaseModel], ...]:
    if shape is None:
        return ()
    return shape if isinstance(shape, tuple) else (shape,)


def _responses(
    path: str, operation: dict[str, Any], answer: Answer | None, refs: dict[type[BaseModel], dict[str, Any]]
) -> dict[str, Any]:
    answer = answer or Answer(None)
    generated = operation.get("responses", {})
    success = generated.get(str(answer.status)) or generated.get("200") or {"description": "Successful Response"}
    if answer.shape is not None:
        shapes = [refs[model] for model in _models(answer.shape)]
        body = shapes[0] if len(shapes) == 1 else {"anyOf": shapes}
        success = {"description": success["description"], "content": {"application/json": {"schema": body}}}
    elif answer.media_type != "application/json":
        success = {
            "description": success["description"],
            "content": {answer.media_type: {"schema": {"type": "string"}}},
        }
    if answer.streams:
        success["content"]["text/event-stream"] = {"schema": SSE_EVENT}
        success["description"] += f"; {STREAMS}"
    responses: dict[str, Any] = {str(answer.status): success}
    statuses = set(answer.errors) | {500}
    if "requestBody" in operation:
        statuses |= set(BODY_ERRORS)
    if operation.get("parameters"):
        statuses.add(400)
    if path.startswith(GATED_PREFIXES):
        statuses |= set(AUTH_ERRORS)
    error_body = {"application/json": {"schema": refs[a.ErrorBody]}}
    for status in sorted(statuses):
        responses[str(status)] = {"description": _meaning(status), "content": error_body}
    if path == "/ready":
        responses["503"] = {"description": "not ready: the reasons are listed", "content": success["content"]}
    busy = responses.get("503")
    described = f"{busy['description']}; or {CONNECTION_LIMIT}" if busy else CONNECTION_LIMIT
    responses["503"] = {"description": described, "content": {**(busy or {}).get("content", {}), **PLAIN_503}}
    return dict(sorted(responses.items()))


def _meaning(status: int) -> str:
    """The error kinds a status stands for, from the taxonomy (kinds.py)."""
    if status in EXTRA_STATUSES:
        return EXTRA_STATUSES[status]
    kinds = sorted(kind.value for kind, policy in POLICIES.items() if policy.status == status)
    return f"OpenAI's error body; error kinds: {', '.join(kinds)}"
