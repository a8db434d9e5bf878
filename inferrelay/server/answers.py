"""The answers' shapes, as typed models for the API description (server/openapi.py); routes build plain dicts.

Each model names the fields every answer carries; `extra="allow"` because remote providers add their own.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


class Shape(BaseModel):
    model_config = ConfigDict(extra="allow")


class ErrorDetail(Shape):
    message: str
    type: str
    param: str | None
    code: str | None
    hint: str | None = None


class ErrorBody(Shape):
    """OpenAI's error body; `hint` is inferrelay's: what a person can do about it."""

    error: ErrorDetail


class Usage(Shape):
    prompt_tokens: int
    completion_tokens: int = 0
    total_tokens: int


class AssistantMessage(Shape):
    role: str
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


class ChatChoice(Shape):
    index: int
    message: AssistantMessage
    finish_reason: str | None
    logprobs: dict[str, Any] | None = None


class ChatCompletion(Shape):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage | None = None


class CompletionChoice(Shape):
    index: int
    text: str
    finish_reason: str | None
    logprobs: dict[str, Any] | None = None


class Completion(Shape):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class Embedding(Shape):
    object: Literal["embedding"]
    index: int
    embedding: list[float] | str
    """floats, or base64 of little-endian float32 with encoding_format: base64"""


class EmbeddingList(Shape):
    object: Literal["list"]
    data: list[Embedding]
    model: str
    usage: Usage | None = None


class ResponseObject(Shape):
    """The Responses API's answer (server/responses.py)."""

    id: str
    object: Literal["response"]
    created_at: int
    status: str
    model: str
    output: list[dict[str, Any]]
    usage: dict[str, Any] | None = None


class Model(Shape):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    capabilities: list[str] | None = None
    engines: list[str] | None = None


class ModelList(Shape):
    object: Literal["list"]
    data: list[Model]


class RuntimeModel(Shape):
    """A model as the runtime sees it (runtime_routes.model_view)."""

    name: str
    source: str
    state: Literal["loaded", "loading", "unloading", "failed", "unloaded"]
    declared_by: Literal["configuration", "registry"]
    registered_at: str | None
    loaded: list[dict[str, Any]]
    queue: dict[str, int]
    last_failure: dict[str, str] | None
    events: list[dict[str, Any]]


class RuntimeModels(Shape):
    models: list[RuntimeModel]


class LoadedModel(Shape):
    name: str
    engine: str
    device: str


class UnloadedModel(Shape):
    name: str
    state: Literal["unloaded"]
    unloaded: list[dict[str, Any]]
    freed_bytes: int


class DoctorReport(Shape):
    model: str


class RuntimeHealth(Shape):
    status: str
    uptime_s: float
    models_loaded: int
    engines_available: list[str]


class RuntimeStats(Shape):
    loads: int
    devices: dict[str, dict[str, Any]]
    models: dict[str, RuntimeModel]
    remediation: dict[str, dict[str, int]]
    unclassified_errors: dict[str, int]
    cancelled: dict[str, int]  # model -> requests whose caller went away first (their work stopped)
    timed_out: dict[str, int]  # model -> requests stopped at their request_timeout
    requests: list[dict[str, Any]]


class Liveness(Shape):
    status: str


class Readiness(Shape):
    ready: bool
    reasons: list[str]
    queues: list[dict[str, Any]]


class EngineStatus(Shape):
    name: str
    available: bool
    error: str | None
    checked_at: str
    capabilities: list[str]
    last_failure: dict[str, Any] | None


class EngineList(Shape):
    engines: list[EngineStatus]


class ProviderList(Shape):
    providers: list[dict[str, Any]]
    state: dict[str, Any]  # where the routing state lives: process or redis, reachable, failures (docs/scaling.md)


class ApiKey(Shape):
    name: str
    key: str
    admin: bool
    models: list[str] | None
    state: str
    created_at: float


class NewApiKey(ApiKey):
    secret: str


class ApiKeyList(Shape):
    object: Literal["list"]
    data: list[ApiKey]


class KeyUsage(Shape):
    key: ApiKey
    since_s: float | None
    data: list[dict[str, Any]]
    spent_tokens: int
    total_tokens: int
