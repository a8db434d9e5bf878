"""The fallback walk: each model's engines in order until one serves."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from inferrelay.config.schema import ModelSpec, Settings
from inferrelay.engines.base import Capability, Engine
from inferrelay.engines.registry import EngineRegistry
from inferrelay.errors import ErrorKind, InferrelayError, classify
from inferrelay.observe import tracing
from inferrelay.outcome import Attempt, ChainFailed, Served, Step, chain_failure
from inferrelay.routing.needs import NOTHING, Needs
from inferrelay.runtime.pool import LoadedSlot, ModelPool, RememberedLoadFailure
from inferrelay.runtime.remediation import ladder, record, recording

T = TypeVar("T")

NOT_ENGINE_FAILURES = frozenset({ErrorKind.UNSUPPORTED, ErrorKind.OVERLOADED})
"""Skips that say nothing against the engine: it cannot honour this request, or its queue is full now."""


async def remedied(walk: Awaitable[Served[T]]) -> Served[T]:
    """Await a walk; the remediation steps taken in it go with its answer, or with its failure."""
    with recording() as remedies:
        try:
            served = await walk
        except ChainFailed as failed:
            failed.remedies = remedies
            raise
    served.remedies = remedies
    return served


class FallbackChain:
    def __init__(self, settings: Settings, registry: EngineRegistry, pool: ModelPool) -> None:
        self._settings = settings
        self._registry = registry
        self._pool = pool

    def loaded(self, name: str) -> list[LoadedSlot]:
        return self._pool.loaded(name)

    async def serve(
        self,
        spec: ModelSpec,
        capability: Capability,
        action: Callable[[LoadedSlot], Awaitable[T]],
        keep_alive: float | None = None,
        needs: Needs = NOTHING,
    ) -> Served[T]:
        """Walk `spec`'s engines; `keep_alive` (from the request) replaces the serving model's; an engine that
        cannot honour `needs` is skipped as `unsupported`.

        A load that fails climbs its remediation ladder (runtime/remediation.py) before the next engine is tried;
        a request that fails on a loaded model goes on to the next engine, and the model stays as it is.
        """
        return await remedied(self._walk(spec, capability, action, keep_alive, needs))

    async def _walk(
        self,
        spec: ModelSpec,
        capability: Capability,
        action: Callable[[LoadedSlot], Awaitable[T]],
        keep_alive: float | None,
        needs: Needs,
    ) -> Served[T]:
        attempts: list[Attempt] = []
        remembered: dict[str, float] = {}  # engines skipped on a recent load failure, and when
        for name in spec.engines:
            attempt = (name, spec, capability, action, attempts, keep_alive, needs)
            outcome = await self._attempt(*attempt, retry_now=False)
            if isinstance(outcome, Served):
                return outcome
            if isinstance(outcome, RememberedLoadFailure):
                remembered[name] = outcome.failed_at
        if remembered:
            # Everything is cooling down: the least recently failed engine is still tried.
            name = min(remembered, key=remembered.__getitem__)
            outcome = await self._attempt(name, spec, capability, action, attempts, keep_alive, needs, retry_now=True)
            if isinstance(outcome, Served):
                return outcome
        raise ChainFailed(chain_failure(f"model {spec.name!r}", "engine", attempts), attempts)

    async def _attempt(
        self,
        name: str,
        spec: ModelSpec,
        capability: Capability,
        action: Callable[[LoadedSlot], Awaitable[T]],
        attempts: list[Attempt],
        keep_alive: float | None,
        needs: Needs,
        *,
        retry_now: bool,
    ) -> Served[T] | InferrelayError:
        """One engine's try: its answer, or the error it failed with (recorded in `attempts`)."""
        backend = f"local/{name}"
        with tracing.span("attempt", **{"inferrelay.backend": backend, "inferrelay.model": spec.name}) as span:
            try:
                engine = self._usable_engine(name, capability)
                gap = needs.local_gap(name, engine.honours)
                if gap is not None:
                    raise gap
                slot = await self._load(spec, engine, backend, retry_now, keep_alive)
                try:
                    return Served(await action(slot), backend, attempts)
                except Exception as exc:
                    failure = classify(exc)
                    if failure.kind is ErrorKind.ENGINE_CRASHED:
                        await self._pool.crashed(slot, failure)
                    raise
            except Exception as exc:
                error = classify(exc)
                tracing.failed(span, error.kind.value, error.message)
                self._next_engine(spec, backend, error)
                if not error.kind.policy.falls_back:
                    raise ChainFailed(error, attempts) from exc
                if not isinstance(error, RememberedLoadFailure) and error.kind not in NOT_ENGINE_FAILURES:
                    self._registry.record_failure(name, spec.name, error)
                attempts.append(Attempt.of(backend, error))
                if not self._settings.fallback:
                    raise ChainFailed(error, attempts) from exc
                return error

    async def _load(
        self, spec: ModelSpec, engine: Engine, backend: str, retry_now: bool, keep_alive: float | None
    ) -> LoadedSlot:
        """The engine's slot; a load out of memory is tried again in the engine's lower precision, then on the
        CPU (the ladder's order), each step recorded. Those steps hold for that load only: the model's next load
        tries its configured precision and device first again (runtime/remediation.py)."""
        while True:
            try:
                return await self._pool.slot(spec, engine, retry_now=retry_now, keep_alive=keep_alive)
            except InferrelayError as error:
                steps = ladder(error.kind)
                dtype = self._pool.planned_dtype(spec, engine.name)
                lower = engine.lower_precision(spec.is_encoder, dtype) if Step.LOWER_PRECISION in steps else None
                device = self._pool.planned_device(spec, engine.name)
                if lower is not None:
                    record(spec.name, backend, Step.LOWER_PRECISION, f"{dtype} -> {lower}, to load")
                    self._pool.lower(spec.name, engine.name, lower)
                elif Step.CPU in steps and device != "cpu":
                    record(spec.name, backend, Step.CPU, f"{device} -> cpu, to load")
                    self._pool.load_on_cpu(spec.name, engine.name, error.message)
                else:
                    self._pool.forget_remedies(spec.name, engine.name)
                    raise
                retry_now = True  # the failure just remembered is the one being remedied

    def _next_engine(self, spec: ModelSpec, backend: str, error: InferrelayError) -> None:
        """Record the walk's own step for this failure: on to the next engine, or this one skipped, and why."""
        for step in ladder(error.kind):
            if step is Step.NEXT_ENGINE:
                record(spec.name, backend, step, f"after {error.kind.value}")
                return
            if step is Step.SKIP_ENGINE:
                record(spec.name, backend, step, f"{error.kind.value}; fix: {error.hint}")
                return

    def _usable_engine(self, name: str, capability: Capability) -> Engine:
        state = self._registry.state(name)
        if state is None or state.engine is None:
            reason = "is not installed" if state is None else state.probe.reason
            raise InferrelayError(ErrorKind.ENGINE_UNAVAILABLE, f"engine {name!r} {reason}")
        if not state.probe.available:
            probe_error = state.probe.error
            kind = probe_error.kind if probe_error else ErrorKind.ENGINE_UNAVAILABLE
            raise InferrelayError(kind, state.probe.reason, hint=probe_error.hint if probe_error else None)
        if capability not in state.engine.capabilities:
            raise InferrelayError(ErrorKind.ENGINE_UNAVAILABLE, f"engine {name!r} does not offer {capability.value}")
        return state.engine
