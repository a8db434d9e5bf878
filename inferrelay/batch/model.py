"""The model a batch worker runs, loaded by the same walk the server uses (routing/fallback.py).

The walk goes down the model's engine chain with the same checks (installed,
offers the task) and the same remediation on load (a lower precision when the
model does not fit), and fails with every engine's reason. The engine runs in
the worker's own process: the coordinator already supervises that process and
retries its chunks when it dies.
"""

from __future__ import annotations

import asyncio
from typing import Any

from inferrelay.capabilities import Capability
from inferrelay.config.schema import Settings
from inferrelay.engines.base import LoadedModel
from inferrelay.engines.registry import EngineRegistry
from inferrelay.errors import ErrorKind, InferrelayError
from inferrelay.routing.fallback import FallbackChain
from inferrelay.runtime.catalog import ModelCatalog
from inferrelay.runtime.pool import ModelPool
from inferrelay.runtime.registry import ModelRegistry
from inferrelay.runtime.slots import LoadedSlot
from inferrelay.tune.book import TuningBook


def load_model(
    name: str,
    settings: Settings,
    engine: str | None = None,
    dtype: str | None = None,
    capability: Capability | None = None,
    compile: bool = False,
    rows: int = 0,
) -> LoadedModel:
    """`name` loaded for `capability` (its first one by default) by the first engine of its chain that loads
    here, or by `engine` alone (which must be in the chain), in the model's dtype or `dtype`. With `compile`, a
    torch encoder runs through torch.compile (unless the model's own options say otherwise), and goes first when
    the tune measured that it loads and computes `rows` soonest here (unless the configuration pins the order)."""
    registry = ModelRegistry(settings.home)
    try:
        catalog = ModelCatalog(settings.models, registry)
        spec = catalog.get(name)
        pinned = catalog.pinned(name)
    finally:
        registry.close()
    if spec is None:
        raise InferrelayError(ErrorKind.MODEL_NOT_FOUND, f"no model named {name!r}", param="model")
    if dtype is not None:
        spec = spec.model_copy(update={"dtype": dtype})
    if engine is not None:
        if engine not in spec.engines:
            raise InferrelayError(
                ErrorKind.BAD_REQUEST, f"engine {engine!r} is not in {name!r}'s chain {spec.engines}", param="engine"
            )
        spec = spec.model_copy(update={"engines": [engine]})
    elif compile and not pinned and TuningBook(settings.home).compiled_pays(name, spec.engines, rows):
        spec = spec.model_copy(update={"engines": ["torch", *(e for e in spec.engines if e != "torch")]})
    if capability is not None and capability not in spec.capabilities:
        raise InferrelayError(ErrorKind.BAD_REQUEST, f"{name!r} does not offer {capability.value}", param="model")
    spec = spec.model_copy(update={"engine_options": dedicated(spec.engine_options, compile)})
    runtime = settings.runtime.model_copy(update={"engine_isolation": "in_process"})
    pool = ModelPool(settings.home, settings.load_retry_after_s, runtime)
    chain = FallbackChain(settings, EngineRegistry.discover(), pool)

    async def loaded(slot: LoadedSlot) -> LoadedModel:
        return slot.model

    served = asyncio.run(chain.serve(spec, capability or spec.capabilities[0], loaded))
    return served.result


def dedicated(options: dict[str, Any], compile: bool = False) -> dict[str, Any]:
    """The engines' options for a process that runs nothing but this model: onnx's threads spin between batches
    instead of sleeping (a server keeps them asleep for its other work; docs/batch.md), and a torch encoder is
    compiled when `compile`, unless the model's own options say otherwise."""
    onnx, torch = options.get("onnx", {}), options.get("torch", {})
    return {**options, "onnx": {"spin": True, **onnx}, "torch": {"compile": compile, **torch}}
