"""model-mappings.yaml: local models, and how a requested name resolves to where it is served."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from inferrelay.capabilities import Capability
from inferrelay.config.runtime import RuntimeSettings
from inferrelay.config.strict import Strict


class Target(Strict):
    """Where a route sends a request: a provider (and the model name there), a chain, or a group."""

    provider: str | None = None
    model: str | None = Field(default=None, description="the name on the provider, when it differs")
    chain: str | None = None
    group: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Target:
        given = [k for k in ("provider", "chain", "group") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("give exactly one of provider, chain or group")
        if self.model and not self.provider:
            raise ValueError("model goes with provider")
        return self


class PatternRoute(Target):
    pattern: str

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        return pattern


class Member(Strict):
    provider: str
    model: str | None = None
    weight: float = Field(default=1.0, gt=0)


class BalancedGroup(Strict):
    strategy: Literal["round_robin", "weighted", "least_busy", "latency"] = "round_robin"
    members: list[Member] = Field(min_length=1)


class MappingsFile(Strict):
    fallback: bool = Field(default=True, description="walk chains on failure; false: the first failure answers")
    models: dict[str, dict[str, Any]] = Field(default_factory=dict)
    exact_matches: dict[str, Target] = Field(default_factory=dict)
    patterns: list[PatternRoute] = Field(default_factory=list)
    capabilities: dict[Capability, Target] = Field(default_factory=dict)
    fallback_chains: dict[str, Annotated[list[Target], Field(min_length=1)]] = Field(default_factory=dict)
    load_balancing: dict[str, BalancedGroup] = Field(default_factory=dict)
    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)
