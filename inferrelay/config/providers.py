"""providers.yaml: where requests can go, in-process (`local`) or to remote OpenAI-compatible servers."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from inferrelay.config.strict import Strict

LOCAL = "local"
REMOTE_TYPES = ("openai_compatible", "vllm", "ollama", "llama_cpp")


class LocalProvider(Strict):
    """inferrelay's own engines; `engines` is the preference order for models that name none."""

    type: Literal["local"]
    engines: list[str] = Field(default_factory=lambda: ["llamacpp", "onnx", "torch"], min_length=1)


class Timeouts(Strict):
    connect_s: float = Field(default=5.0, gt=0)
    read_s: float = Field(default=120.0, gt=0)


class RateLimits(Strict):
    rpm: int | None = Field(default=None, gt=0, description="requests per minute")
    tpm: int | None = Field(default=None, gt=0, description="tokens per minute")


class RemoteProvider(Strict):
    type: Literal["openai_compatible", "vllm", "ollama", "llama_cpp"]
    base_url: str
    health_endpoint: str = "/health"
    health_interval_s: float = Field(default=15.0, ge=0, description="0: no background health checks")
    api_key_env: str | None = Field(default=None, description="the environment variable holding the API key")
    timeouts: Timeouts = Field(default_factory=Timeouts)
    rate_limits: RateLimits = Field(default_factory=RateLimits)
    max_retries: int = Field(default=2, ge=0)
    max_in_flight: int | None = Field(
        default=None,
        gt=0,
        description="requests sent there at once (a stream counts until it ends); at the limit the provider is "
        "skipped (attempt `overloaded`); absent: no limit",
    )
    cooldown_s: float = Field(default=30.0, ge=0)
    models: list[str] = Field(default_factory=list, description="model names served there; empty: any")
    drop_fields: list[str] = Field(
        default_factory=list, description="request fields removed before a request goes there (it would refuse them)"
    )
    refuse_fields: list[str] = Field(
        default_factory=list,
        description="request fields this provider cannot honour: a request with one skips it (attempt `unsupported`)",
    )

    @field_validator("base_url")
    @classmethod
    def _http(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        return url.rstrip("/")

    @field_validator("health_endpoint")
    @classmethod
    def _path(cls, endpoint: str) -> str:
        if not endpoint.startswith("/"):
            raise ValueError("health_endpoint is a path on base_url's server and starts with /")
        return endpoint


Provider = Annotated[LocalProvider | RemoteProvider, Field(discriminator="type")]


class ProvidersFile(Strict):
    providers: dict[str, Provider] = Field(default_factory=dict)
