"""`inferrelay config export-litellm`: the LiteLLM proxy config.yaml that routes the same way.

What LiteLLM can express is exported; what it cannot (regular expressions
other than a prefix, per-group strategies, capability routing) is listed in
`notes`, printed as comments at the top of the file, never dropped silently.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from inferrelay.config.mappings import Target
from inferrelay.config.providers import LocalProvider, RemoteProvider
from inferrelay.config.schema import Settings

LITELLM_PREFIX = {"vllm": "hosted_vllm", "ollama": "ollama_chat", "llama_cpp": "openai", "openai_compatible": "openai"}
LITELLM_STRATEGY = {
    "round_robin": "simple-shuffle",
    "weighted": "simple-shuffle",
    "least_busy": "least-busy",
    "latency": "latency-based-routing",
}


@dataclass
class LiteLLMConfig:
    model_list: list[dict[str, Any]] = field(default_factory=list)
    fallbacks: list[dict[str, list[str]]] = field(default_factory=list)
    strategy: str = "simple-shuffle"
    notes: list[str] = field(default_factory=list)

    def as_dict(self, settings: Settings) -> dict[str, Any]:
        remote = [p for p in settings.providers.values() if isinstance(p, RemoteProvider)]
        router: dict[str, Any] = {
            "routing_strategy": self.strategy,
            "num_retries": max((p.max_retries for p in remote), default=2),
            "cooldown_time": max((p.cooldown_s for p in remote), default=30),
        }
        if settings.fallback and self.fallbacks:
            router["fallbacks"] = self.fallbacks
        return {"model_list": self.model_list, "router_settings": router}


def export_litellm(settings: Settings, inferrelay_url: str) -> LiteLLMConfig:
    out = LiteLLMConfig()
    exporter = _Exporter(settings, inferrelay_url.rstrip("/"), out)
    exporter.run()
    return out


class _Exporter:
    def __init__(self, settings: Settings, inferrelay_url: str, out: LiteLLMConfig) -> None:
        self.settings = settings
        self.routes = settings.routes
        self.url = inferrelay_url
        self.out = out
        self._named: set[str] = set()

    def run(self) -> None:
        for spec in self.settings.models:
            self._deployment(spec.name, "local", spec.name)
        for name, group in self.routes.load_balancing.items():
            for member in group.members:
                self._deployment(name, member.provider, member.model or name, weight=member.weight)
        strategies = {g.strategy for g in self.routes.load_balancing.values()}
        if strategies:
            chosen = sorted(strategies)[0]
            self.out.strategy = LITELLM_STRATEGY[chosen]
            if len(strategies) > 1:
                self.out.notes.append(f"groups use {sorted(strategies)}; LiteLLM has one strategy: {chosen}")
        for name, target in self.routes.exact_matches.items():
            self._route(name, target)
        for route in self.routes.patterns:
            prefix = re.fullmatch(r"\^([\w.:/-]+)", route.pattern)
            if prefix is None:
                self.out.notes.append(
                    f"pattern {route.pattern!r} is not a plain prefix; LiteLLM wildcards cannot say it"
                )
                continue
            self._route(f"{prefix.group(1)}*", route)
        for capability in self.routes.capabilities:
            self.out.notes.append(f"capability route {capability.value!r} has no LiteLLM equivalent")

    def _route(self, name: str, target: Target) -> None:
        steps = self._steps(target)
        self._alias(name, steps[0])
        if len(steps) > 1:
            self.out.fallbacks.append({name: steps[1:]})

    def _steps(self, target: Target) -> list[str]:
        """The LiteLLM model names a target walks through, in order."""
        if target.group is not None:
            return [target.group]
        if target.chain is not None:
            return [name for step in self.routes.fallback_chains[target.chain] for name in self._steps(step)]
        assert target.provider is not None
        model = target.model or ""
        name = f"{target.provider}/{model}" if model else target.provider
        self._deployment(name, target.provider, model)
        return [name]

    def _alias(self, name: str, deployment: str) -> None:
        """LiteLLM routes a public name by listing the deployments under it again."""
        for entry in [e for e in self.out.model_list if e["model_name"] == deployment]:
            self._add({"model_name": name, "litellm_params": dict(entry["litellm_params"])})

    def _deployment(self, name: str, provider_name: str, model: str, weight: float | None = None) -> None:
        provider = self.settings.providers[provider_name]
        if isinstance(provider, LocalProvider):
            params: dict[str, Any] = {"model": f"openai/{model}", "api_base": f"{self.url}/v1", "api_key": "unused"}
        else:
            params = {"model": f"{LITELLM_PREFIX[provider.type]}/{model}", "api_base": provider.base_url}
            if provider.type == "ollama":
                params["api_base"] = provider.base_url.removesuffix("/v1")
            if provider.api_key_env:
                params["api_key"] = f"os.environ/{provider.api_key_env}"
            params["timeout"] = provider.timeouts.read_s
            params |= {k: v for k, v in provider.rate_limits.model_dump().items() if v is not None}
        if weight is not None:
            params["weight"] = weight
        self._add({"model_name": name, "litellm_params": params})

    def _add(self, entry: dict[str, Any]) -> None:
        key = repr(entry)
        if key not in self._named:
            self._named.add(key)
            self.out.model_list.append(entry)
