"""Typed settings: the model list, the engine chains and the fallback switch."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from inferrelay.capabilities import Capability
from inferrelay.config.mappings import MappingsFile
from inferrelay.config.providers import LocalProvider, Provider
from inferrelay.config.runtime import RuntimeSettings
from inferrelay.config.strict import Strict
from inferrelay.config.units import Duration

LOCAL_ONLY: dict[str, Provider] = {"local": LocalProvider(type="local")}
"""The providers when providers.yaml names none: inferrelay's own engines."""


def default_home() -> Path:
    """$INFERRELAY_HOME, else ~/.inferrelay: the registry, the cache and the logs live there."""
    return Path(os.environ.get("INFERRELAY_HOME", "~/.inferrelay")).expanduser()


class ModelSpec(Strict):
    """One model, declared once; each engine of its chain derives what it needs from `source`."""

    name: str = Field(min_length=1)
    source: str = Field(
        min_length=1,
        description="a GGUF file, a Hugging Face folder, or 'package:<module>/<path>'",
    )
    capabilities: list[Capability] = Field(min_length=1)
    engines: list[str] = Field(min_length=1, description="the fallback chain, first engine first")
    context_length: int = Field(default=2048, gt=0)
    device: str = Field(default="auto", description="auto (CUDA, then MPS, then CPU), cuda, cuda:N, mps or cpu")
    dtype: str = Field(
        default="auto",
        description="auto (by device: SPEC §2), float32, float16, bfloat16, or int8 (onnx: int8 weights)",
    )
    keep_alive: Duration | None = Field(
        default=None,
        description="idle time before unloading: seconds or '5m'; 0: after each request; negative: never. "
        "Absent: runtime.keep_alive",
    )
    pinned: bool = Field(default=False, description="never evicted to make room for another model")
    request_timeout: Duration | None = Field(
        default=None,
        description="the time budget of a request that names this model; absent: runtime.request_timeout",
    )
    max_queue: int | None = Field(
        default=None,
        ge=0,
        description="requests that may wait for this model beyond those it runs; absent: runtime.max_queue",
    )
    truncate: bool = Field(
        default=True,
        description="embeddings: an input past the model's window is cut to it, as sentence-transformers does; "
        "false: refused (400 context_length_exceeded). A request's own `truncate` wins",
    )
    engine_options: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per-engine settings, e.g. {'fake': {'latency_ms': 50}}"
    )

    @field_validator("capabilities")
    @classmethod
    def _encoder_or_decoder(cls, capabilities: list[Capability]) -> list[Capability]:
        if Capability.EMBEDDINGS in capabilities and len(set(capabilities)) > 1:
            raise ValueError("a model is an embedding model or a chat/completion model, not both")
        return capabilities

    @property
    def is_encoder(self) -> bool:
        return Capability.EMBEDDINGS in self.capabilities

    @field_validator("engines")
    @classmethod
    def _no_repeats(cls, engines: list[str]) -> list[str]:
        if len(set(engines)) != len(engines):
            raise ValueError("an engine appears twice in the chain")
        return engines


class Settings(Strict):
    """Everything the server needs, passed explicitly to the app factory."""

    models: list[ModelSpec]
    fallback: bool = Field(default=True, description="walk the chain on failure; off: first failure answers")
    home: Path = Field(default_factory=default_home)
    providers: dict[str, Provider] = Field(default_factory=lambda: dict(LOCAL_ONLY))
    routes: MappingsFile = Field(
        default_factory=MappingsFile, description="resolution and chains (model-mappings.yaml)"
    )
    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)
    load_retry_after_s: float = Field(
        default=30.0, ge=0, description="how long a failed load is remembered before it is tried again"
    )

    def model(self, name: str) -> ModelSpec | None:
        return next((m for m in self.models if m.name == name), None)
