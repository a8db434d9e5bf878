"""Name -> the steps that may serve it: exact match, first pattern, capability, then local models."""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass

from inferrelay.config.mappings import Member, Target
from inferrelay.config.providers import LOCAL, RemoteProvider
from inferrelay.config.schema import Settings
from inferrelay.engines.base import Capability
from inferrelay.errors import ErrorKind, InferrelayError
from inferrelay.routing.stats import DeploymentBook
from inferrelay.runtime.catalog import ModelCatalog


@dataclass(frozen=True)
class Step:
    """One place to try: a provider and the model's name there."""

    provider: str
    model: str

    @property
    def backend(self) -> str:
        return f"{self.provider}/{self.model}" if self.provider != LOCAL else LOCAL


class Resolver:
    def __init__(
        self,
        settings: Settings,
        book: DeploymentBook | None = None,
        draws: random.Random | None = None,
        catalog: ModelCatalog | None = None,
    ) -> None:
        self._settings = settings
        self._book = book or DeploymentBook()
        self._draws = draws or random.Random()
        self._routes = settings.routes
        self._patterns = [(re.compile(p.pattern), p) for p in self._routes.patterns]
        self._local = catalog or ModelCatalog(settings.models)
        self._turns = {name: itertools.count() for name in self._routes.load_balancing}

    def resolve(self, name: str, capability: Capability) -> list[Step]:
        target = self._routes.exact_matches.get(name) or next(
            (route for pattern, route in self._patterns if pattern.search(name)), None
        )
        if target is None and name not in self._local:
            target = self._routes.capabilities.get(capability)
        if target is not None:
            return list(self._expand(target, name))
        if name in self._local:
            return [Step(LOCAL, name)]
        raise InferrelayError(ErrorKind.MODEL_NOT_FOUND, f"The model {name!r} does not exist.", param="model")

    def _expand(self, target: Target, requested: str) -> Iterator[Step]:
        if target.provider is not None:
            yield Step(target.provider, target.model or requested)
        elif target.chain is not None:
            for step in self._routes.fallback_chains[target.chain]:
                yield from self._expand(step, requested)
        elif target.group is not None:
            for member in self._balanced(target.group):
                yield Step(member.provider, member.model or requested)

    def _balanced(self, name: str) -> list[Member]:
        """The group's members, best first by its strategy; the rest follow as fallbacks."""
        group = self._routes.load_balancing[name]
        start = next(self._turns[name]) % len(group.members)
        turn = group.members[start:] + group.members[:start]  # round robin, and the tie-break of the others
        if group.strategy == "least_busy":
            return sorted(turn, key=lambda m: self._book[m.provider].in_flight + self._book[m.provider].elsewhere)
        if group.strategy == "latency":
            return sorted(turn, key=lambda m: self._book[m.provider].latency_ms or 0.0)
        if group.strategy == "weighted":
            first = self._draws.choices(group.members, weights=[m.weight for m in group.members])[0]
            return [first, *(m for m in group.members if m is not first)]
        return turn

    def exposed(self) -> list[str]:
        """What GET /v1/models lists: local models, routed names, and models remote providers declare."""
        names = [*self._local.names(), *self._routes.exact_matches]
        for provider in self._settings.providers.values():
            if isinstance(provider, RemoteProvider):
                names += provider.models
        return list(dict.fromkeys(names))
