"""A registration request turned into a ModelSpec: the source checked, the omitted fields filled in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError

from inferrelay.config.schema import ModelSpec
from inferrelay.config.strict import Strict
from inferrelay.config.units import Duration
from inferrelay.engines.base import Capability
from inferrelay.errors import bad_request
from inferrelay.runtime.admission import check_source
from inferrelay.runtime.defaults import default_capabilities, default_engines

MAX_DEFAULT_CONTEXT = 8192
"""A model trained on 128k tokens would reserve a KV cache for all of them: ask for more explicitly."""


class RegisterRequest(Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$", max_length=128)
    source: str = Field(min_length=1)
    capabilities: list[Capability] | None = None
    engines: list[str] | None = Field(default=None, min_length=1)
    context_length: int | None = Field(default=None, gt=0)
    device: str = "auto"
    dtype: str = "auto"
    keep_alive: Duration | None = None
    pinned: bool = False
    engine_options: dict[str, dict[str, Any]] = Field(default_factory=dict)


def registration_spec(body: dict[str, Any] | RegisterRequest, roots: list[Path]) -> ModelSpec:
    """Check the source under `roots` and build the spec; every problem is a 400 that names it."""
    try:
        request = body if isinstance(body, RegisterRequest) else RegisterRequest.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise bad_request(f"{field}: {first['msg']}", param=field) from exc
    path, format, facts = check_source(request.source, roots)
    capabilities = request.capabilities or default_capabilities(format, facts)
    fields = request.model_dump(exclude={"source", "capabilities", "engines", "context_length"})
    try:
        return ModelSpec(
            **fields,
            source=str(path),
            capabilities=capabilities,
            engines=request.engines or default_engines(format, capabilities),
            context_length=request.context_length or min(facts.trained_context or 2048, MAX_DEFAULT_CONTEXT),
        )
    except ValidationError as exc:
        raise bad_request(f"invalid registration: {exc.errors()[0]['msg']}") from exc
