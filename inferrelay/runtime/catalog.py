"""The local models served here: those the configuration declares and those registered at run time.

The configuration (the embedded models, and model-mappings.yaml's `models`)
wins for a name it declares; the registry adds the rest, and keeps them
across restarts. The engine chain of an embedded or registered model is
ordered by what `inferrelay tune` measured on this machine (tune/book.py);
a model declared in model-mappings.yaml keeps the order written there.
"""

from __future__ import annotations

from inferrelay.config.embedded import embedded_models
from inferrelay.config.schema import ModelSpec
from inferrelay.errors import ErrorKind, InferrelayError
from inferrelay.runtime.registry import ModelRegistry, Registration
from inferrelay.tune.book import TuningBook


class ModelCatalog:
    def __init__(self, declared: list[ModelSpec], registry: ModelRegistry | None = None) -> None:
        self._declared = {spec.name: spec for spec in declared}
        self._registry = registry
        # the registry's rows of the embedded models record them; the configuration serves them
        self._registered = {r.spec.name: r for r in registry.list() if not r.builtin} if registry else {}
        self.tunings = TuningBook(registry.path.parent) if registry else None
        defaults = {spec.name: spec for spec in embedded_models()}
        self._pinned = {name for name, spec in self._declared.items() if defaults.get(name) != spec}

    def get(self, name: str) -> ModelSpec | None:
        spec = self._declared.get(name)
        if spec is None:
            registration = self._registered.get(name)
            spec = registration.spec if registration else None
        if spec is None or name in self._pinned or self.tunings is None:
            return spec
        order = self.tunings.order(name, spec.engines)
        return spec if order is None or order == spec.engines else spec.model_copy(update={"engines": order})

    def pinned(self, name: str) -> bool:
        """Whether the configuration wrote this model's chain, so no tuning reorders it."""
        return name in self._pinned

    def __contains__(self, name: object) -> bool:
        return name in self._declared or name in self._registered

    def names(self) -> list[str]:
        return list(dict.fromkeys([*self._declared, *self._registered]))

    def registration(self, name: str) -> Registration | None:
        return self._registered.get(name)

    def declared(self, name: str) -> bool:
        return name in self._declared

    def register(self, spec: ModelSpec) -> Registration:
        if self._registry is None:
            raise InferrelayError(ErrorKind.INTERNAL, "this server was started without a model registry")
        if spec.name in self._declared:
            raise InferrelayError(
                ErrorKind.CONFLICT,
                f"a model named {spec.name!r} is already served (declared by the configuration); choose another name",
                param="name",
            )
        registration = self._registry.add(spec)
        self._registered[spec.name] = registration
        return registration
