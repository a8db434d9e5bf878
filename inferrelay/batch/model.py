"""The model a batch worker runs: the first engine of the model's chain that loads here."""

from __future__ import annotations

from inferrelay.config.schema import Settings
from inferrelay.engines.base import LoadedModel
from inferrelay.engines.registry import EngineRegistry
from inferrelay.errors import ErrorKind, InferrelayError, classify
from inferrelay.runtime.catalog import ModelCatalog
from inferrelay.runtime.registry import ModelRegistry


def load_model(name: str, settings: Settings, engine: str | None = None, dtype: str | None = None) -> LoadedModel:
    """Walk the engine chain as the server does (or load with `engine` alone, which must be in it), in the
    model's dtype or `dtype`; every failure is kept for the message if none loads."""
    registry = ModelRegistry(settings.home)
    try:
        spec = ModelCatalog(settings.models, registry).get(name)
    finally:
        registry.close()
    if spec is None:
        raise InferrelayError(ErrorKind.MODEL_NOT_FOUND, f"no model named {name!r}", param="model")
    if dtype is not None:
        spec = spec.model_copy(update={"dtype": dtype})
    if engine is not None and engine not in spec.engines:
        raise InferrelayError(
            ErrorKind.BAD_REQUEST, f"engine {engine!r} is not in {name!r}'s chain {spec.engines}", param="engine"
        )
    engines = EngineRegistry.discover()
    reasons = []
    for engine_name in [engine] if engine else spec.engines:
        state = engines.state(engine_name)
        if state is None or state.engine is None or not state.probe.available:
            reasons.append(f"{engine_name}: {state.probe.reason if state else 'not installed'}")
            continue
        try:
            return state.engine.load(spec, spec.device, settings.home)
        except Exception as exc:
            error = classify(exc, loading=True)
            reasons.append(f"{engine_name}: {error.kind.value}: {error.message}")
    raise InferrelayError(ErrorKind.ALL_BACKENDS_FAILED, f"no engine could load {name!r}: " + "; ".join(reasons))
