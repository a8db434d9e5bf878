"""Loaded models: loads on demand, one at a time, within a memory budget; unloads when idle.

One load runs per (model, engine) however many requests wait for it, and a
request that goes away does not abandon a half-finished load. Loads are
serialised so that the memory a load adds can be measured and charged to it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from inferrelay.config.runtime import RuntimeSettings
from inferrelay.config.schema import ModelSpec
from inferrelay.engines.base import Engine, utcnow
from inferrelay.engines.devices import pick_device, pick_dtype
from inferrelay.errors import ErrorKind, InferrelayError, ModelScopedError, classify
from inferrelay.observe import tracing
from inferrelay.runtime.crashes import CrashHistory
from inferrelay.runtime.eviction import choose_victims, holders
from inferrelay.runtime.memory import available_bytes, format_bytes, process_rss, release_freed
from inferrelay.runtime.model_host import host_address
from inferrelay.runtime.placement import Planned, plan_load
from inferrelay.runtime.shared_workers import start_shared_worker
from inferrelay.runtime.slots import LoadedSlot, Placement
from inferrelay.runtime.workers import WorkerCrashed, WorkerModel, start_worker

log = logging.getLogger(__name__)
EVENTS_KEPT = 1000


@dataclass(frozen=True)
class LoadFailure:
    at: float
    kind: ErrorKind
    message: str
    hint: str


class RememberedLoadFailure(InferrelayError):
    """A load that failed recently, answered from memory instead of loading again."""

    def __init__(self, failure: LoadFailure) -> None:
        super().__init__(failure.kind, f"{failure.message} (remembered)", hint=failure.hint)
        self.failed_at = failure.at


@dataclass(frozen=True)
class Event:
    """Something the runtime did to a model on its own: an unload, an eviction, a move to the CPU."""

    at: datetime
    model: str
    what: str
    detail: str
    freed_bytes: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"at": self.at.isoformat(), "what": self.what, "detail": self.detail, "freed_bytes": self.freed_bytes}


class ModelPool:
    def __init__(
        self,
        home: Path,
        retry_after_s: float,
        runtime: RuntimeSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._home = home
        self._retry_after_s = retry_after_s
        self._runtime = runtime or RuntimeSettings()
        self._clock = clock
        self._slots: dict[tuple[str, str], LoadedSlot] = {}
        self._failed: dict[tuple[str, str], LoadFailure] = {}
        self._loading: dict[tuple[str, str], asyncio.Task[LoadedSlot]] = {}
        self._unloading: list[str] = []
        # (model, engine) whose load ran out of memory: its next load on the CPU, or in this dtype (that load only)
        self._on_cpu: set[tuple[str, str]] = set()
        self._lowered: dict[tuple[str, str], str] = {}
        self._remedied: set[tuple[str, str]] = set()  # loaded below their configured precision or device
        self._load_lock = asyncio.Lock()
        runtime = self._runtime
        self.crashes = CrashHistory(
            runtime.crash_window, runtime.crash_limit, runtime.crash_cooldown, runtime.crash_backoff, clock=clock
        )
        self.loads = 0
        self.events: deque[Event] = deque(maxlen=EVENTS_KEPT)  # bounded: the newest are what an operator reads

    async def slot(
        self, spec: ModelSpec, engine: Engine, *, retry_now: bool = False, keep_alive: float | None = None
    ) -> LoadedSlot:
        """The loaded model, loading it first if needed; `keep_alive` (per request) replaces the model's."""
        key = (spec.name, engine.name)
        slot = self._slots.get(key)
        if slot is None:
            self._refuse_after_crashes(key, retry_now)
            failure = self._failed.get(key)
            if failure and not retry_now and self._clock() - failure.at < self._retry_after_s:
                raise RememberedLoadFailure(failure)
            task = self._loading.get(key)
            if task is None:
                task = asyncio.create_task(self._load(key, spec, engine))
                self._loading[key] = task
            slot = await asyncio.shield(task)
        if keep_alive is not None:
            slot.keep_alive = keep_alive
        return slot

    def _refuse_after_crashes(self, key: tuple[str, str], retry_now: bool) -> None:
        """Backoff after a worker crash, cooldown after a crash loop, and no start at all for a build that
        cannot run here. A walk with nothing else left still tries the least recently failed (retry_now)."""
        waiting = self.crashes.wait(key)
        if waiting is None:
            return
        seconds, why = waiting
        model, engine = key
        if seconds == float("inf"):
            raise ModelScopedError(ErrorKind.ENGINE_UNAVAILABLE, f"{engine} cannot run {model} here: {why}")
        if retry_now:
            return
        kind = ErrorKind.COOLING_DOWN if why.startswith("cooling down") else ErrorKind.ENGINE_CRASHED
        message = f"{engine} for {model}: {why}; next start in {seconds:.1f}s"
        raise RememberedLoadFailure(LoadFailure(self._clock(), kind, message, kind.policy.hint))

    async def crashed(self, slot: LoadedSlot, error: InferrelayError) -> None:
        """A worker died under a request: the slot goes (and its memory from the accounting); the crash counts."""
        key = (slot.spec.name, slot.placement.engine)
        if self._slots.get(key) is not slot:
            return  # another request saw the same death first
        self.crashes.crashed(key, error.message)
        await self._unload(slot, "crashed", error.message)

    def loaded(self, name: str | None = None) -> list[LoadedSlot]:
        return [slot for (model, _), slot in self._slots.items() if name is None or model == name]

    def loading(self, name: str) -> bool:
        return any(model == name for model, _ in self._loading)

    def unloading(self, name: str) -> bool:
        return name in self._unloading

    def failure(self, name: str) -> LoadFailure | None:
        return next((f for (model, _), f in self._failed.items() if model == name), None)

    async def _load(self, key: tuple[str, str], spec: ModelSpec, engine: Engine) -> LoadedSlot:
        try:
            async with self._load_lock:
                placed = spec.model_copy(update={"device": "cpu"}) if key in self._on_cpu else spec
                if key in self._lowered:
                    placed = placed.model_copy(update={"dtype": self._lowered[key]})
                planned = await asyncio.to_thread(plan_load, placed, engine)
                await self._make_room(spec, planned)
                slot = await self._load_on(spec, engine, planned)
        except Exception as exc:
            error = self._start_crash(key, exc) if isinstance(exc, WorkerCrashed) else classify(exc, loading=True)
            if error.kind not in (ErrorKind.OUT_OF_MEMORY, ErrorKind.ENGINE_CRASHED):  # those have their own rules
                self._failed[key] = LoadFailure(self._clock(), error.kind, error.message, error.hint)
            raise error from exc
        finally:
            self._loading.pop(key, None)
        self._failed.pop(key, None)
        self._settle_remedies(key, slot)
        slot.on_idle = self._idle
        self._slots[key] = slot
        self.loads += 1
        return slot

    def _start_crash(self, key: tuple[str, str], crash: WorkerCrashed) -> InferrelayError:
        """A worker that died while loading or in its smoke run. An illegal instruction there means the build
        cannot run on this CPU: the engine is unusable for the model. Any other death counts as a crash."""
        self.events.append(Event(utcnow(), key[0], "crashed", f"{key[1]}: {crash.message} (starting)"))
        if crash.signal == "SIGILL":
            reason = f"its worker died of SIGILL before serving (loading or its smoke run); fix: {crash.hint}"
            self.crashes.mark_unusable(key, reason)
            return ModelScopedError(ErrorKind.ENGINE_UNAVAILABLE, f"{crash.message} before serving", hint=crash.hint)
        self.crashes.crashed(key, crash.message)
        return crash

    async def _load_on(self, spec: ModelSpec, engine: Engine, planned: Planned) -> LoadedSlot:
        """Load, measuring what it adds; out of GPU memory, load again on the CPU."""
        attributes = {
            "inferrelay.model": spec.name,
            "inferrelay.engine": engine.name,
            "inferrelay.device": planned.device,
        }
        with tracing.span("model.load", **attributes, **{"inferrelay.dtype": planned.dtype}):
            return await self._load_where_planned(spec, engine, planned)

    async def _load_where_planned(self, spec: ModelSpec, engine: Engine, planned: Planned) -> LoadedSlot:
        """One load where planned. Out of memory is the walk's to remedy (routing/fallback.py): a lower
        precision first, then the CPU, each recorded for the request."""
        return await asyncio.to_thread(self._measured_load, spec, engine, planned)

    def _measured_load(self, spec: ModelSpec, engine: Engine, planned: Planned) -> LoadedSlot:
        isolated = self._isolated(spec, engine)
        options = {**spec.engine_options, engine.name: _without_isolation(spec.engine_options.get(engine.name, {}))}
        placed = spec.model_copy(update={"dtype": planned.dtype, "engine_options": options})
        before, started = process_rss(), time.perf_counter()
        if isolated:
            self.crashes.started((spec.name, engine.name))
            start = start_shared_worker if host_address() else start_worker  # one per machine under --workers
            model = start(engine, placed, planned.device, self._home)
        else:
            model = engine.load(placed, planned.device, self._home)
        seconds = time.perf_counter() - started
        if isinstance(model, WorkerModel):
            held = model.held_bytes if planned.device == "cpu" else 0
        else:
            held = max(0, process_rss() - before) if planned.device == "cpu" else 0
        configured_device = pick_device(spec.device)[0]
        placement = Placement(
            engine.name,
            planned.device,
            planned.device_reason,
            planned.dtype,
            planned.estimate,
            held,
            seconds,
            configured=(configured_device, pick_dtype(spec.dtype, configured_device)),
        )
        keep_alive = spec.keep_alive if spec.keep_alive is not None else self._runtime.keep_alive
        slot = LoadedSlot(
            model, spec, placement, keep_alive, self._clock, max_queue=self.max_queue(spec), parallel=model.parallel
        )
        slot.restarts = self.crashes.restarts((spec.name, engine.name)) if isolated else 0
        return slot

    def max_queue(self, spec: ModelSpec) -> int:
        """Requests that may wait for `spec` once loaded: its own max_queue, else runtime.max_queue."""
        return spec.max_queue if spec.max_queue is not None else self._runtime.max_queue

    def _isolated(self, spec: ModelSpec, engine: Engine) -> bool:
        """In a worker process unless the model, the runtime settings or the engine itself say in_process."""
        asked = spec.engine_options.get(engine.name, {}).get("isolation")
        if asked not in (None, "process", "in_process"):
            raise InferrelayError(
                ErrorKind.MODEL_LOAD_FAILED,
                f"engine_options.{engine.name}.isolation is {asked!r}: use 'process' or 'in_process'",
            )
        if asked is not None:
            return bool(asked == "process")
        return engine.isolation == "process" and self._runtime.engine_isolation == "process"

    def planned_device(self, spec: ModelSpec, engine: str) -> str:
        """The device the model's next load with `engine` will use."""
        return "cpu" if (spec.name, engine) in self._on_cpu else pick_device(spec.device)[0]

    def load_on_cpu(self, name: str, engine: str, reason: str) -> None:
        """Load `name` with `engine` on the CPU, this load only (a remediation step: it did not fit on the GPU)."""
        self._on_cpu.add((name, engine))
        detail = f"{engine}: its load ran out of GPU memory; loading it on the cpu until its next load: {reason}"
        self.events.append(Event(utcnow(), name, "moved_to_cpu", detail))

    def planned_dtype(self, spec: ModelSpec, engine: str) -> str:
        """The dtype the model's next load with `engine` will use."""
        if (spec.name, engine) in self._lowered:
            return self._lowered[(spec.name, engine)]
        return pick_dtype(spec.dtype, self.planned_device(spec, engine))

    def lower(self, name: str, engine: str, dtype: str) -> None:
        """Load `name` with `engine` in `dtype`, this load only (a remediation step: its load did not fit)."""
        self._lowered[(name, engine)] = dtype
        detail = f"{engine}: its load ran out of memory; loading it in {dtype} until its next load"
        self.events.append(Event(utcnow(), name, "lower_precision", detail))

    def forget_remedies(self, name: str, engine: str) -> None:
        """The ladder gave up on this engine: its next load starts from the configured precision and device."""
        self._lowered.pop((name, engine), None)
        self._on_cpu.discard((name, engine))

    def _settle_remedies(self, key: tuple[str, str], slot: LoadedSlot) -> None:
        """A load done: the steps that made it fit are spent (the next load tries the configured precision and
        device first again); one loaded as configured after a remedied one is recorded as restored."""
        remedied = key in self._lowered or key in self._on_cpu
        self.forget_remedies(*key)
        if remedied:
            self._remedied.add(key)
        elif key in self._remedied:
            self._remedied.discard(key)
            placement = slot.placement
            detail = f"{key[1]}: loaded as configured again ({placement.dtype} on {placement.device})"
            self.events.append(Event(utcnow(), key[0], "restored", detail))

    def admit_request(self, slot: LoadedSlot, needed: int, what: str) -> None:
        """Refuse work whose working memory would not fit beside the models on the slot's device."""
        device = slot.placement.device
        room = self.room(device)
        if room is not None and needed > room:
            raise InferrelayError(
                ErrorKind.OUT_OF_MEMORY,
                f"{what} needs about {format_bytes(needed)} of working memory on {device}, and "
                f"{format_bytes(max(room, 0))} is free within the memory budget beside the loaded models",
                hint="Send fewer or shorter inputs, raise runtime.memory_budget, or unload a model.",
            )

    def room(self, device: str) -> int | None:
        """Bytes a new model may take on `device` now: within the budget and the free memory; None: no limit known."""
        kind = device.split(":")[0]
        limits = []
        budget = self._runtime.memory_budget.get(kind)
        if budget is not None:
            charged = sum(s.placement.charged_bytes for s in self._slots.values() if s.placement.device == device)
            limits.append(budget - charged)
        free = available_bytes(device)
        if free is not None:
            limits.append(int(free * self._runtime.free_fraction))
        return min(limits) if limits else None

    async def _make_room(self, spec: ModelSpec, planned: Planned) -> None:
        """Evict idle models until `planned` fits, or refuse before loading anything."""
        if planned.estimate is None:
            return
        needed = planned.estimate.total
        room = self.room(planned.device)
        if room is None or needed <= room:
            return
        on_device = [s for s in self._slots.values() if s.placement.device == planned.device]
        victims = choose_victims(on_device, needed, room, self._clock())
        for victim in victims or []:
            await self._unload(victim, "evicted", f"to make room for {spec.name}")
        room = self.room(planned.device)
        if room is not None and needed > room:
            estimate = planned.estimate
            raise InferrelayError(
                ErrorKind.OUT_OF_MEMORY,
                f"{spec.name} needs about {format_bytes(needed)} on {planned.device} (weights "
                f"{format_bytes(estimate.weights)}, KV cache {format_bytes(estimate.kv_cache)}, overhead "
                f"{format_bytes(estimate.overhead)}) but {format_bytes(max(room, 0))} is free within the budget; "
                f"held by: {holders(on_device)}",
                hint="Unload or unpin a model, raise runtime.memory_budget, or use a smaller model or context.",
            )

    async def unload(self, name: str, reason: str = "requested") -> list[Event]:
        return [await self._unload(slot, "unloaded", reason) for slot in self.loaded(name)]

    async def _unload(self, slot: LoadedSlot, what: str, detail: str) -> Event:
        key = (slot.spec.name, slot.placement.engine)
        if self._slots.get(key) is slot:
            del self._slots[key]  # new requests load afresh; those under way finish first
        self._unloading.append(slot.spec.name)
        try:
            before = process_rss()
            await asyncio.to_thread(slot.close)
            await asyncio.to_thread(release_freed)
            freed = max(0, before - process_rss())
            event = Event(utcnow(), slot.spec.name, what, f"{slot.placement.engine}: {detail}", freed)
            self.events.append(event)
        finally:
            self._unloading.remove(slot.spec.name)
        log.info("%s %s (%s), freed %s", slot.spec.name, what, detail, format_bytes(freed))
        return event

    def _idle(self, slot: LoadedSlot) -> None:
        if slot.keep_alive == 0:
            asyncio.get_running_loop().create_task(self._unload(slot, "unloaded", "keep_alive 0: after its request"))

    async def reap(self) -> None:
        """Unload every model idle past its keep_alive, and every idle model whose worker has died."""
        for slot in [s for s in self._slots.values() if s.active == 0 and isinstance(s.model, WorkerModel)]:
            worker = slot.model.worker  # type: ignore[attr-defined]
            if not worker.alive:
                await self.crashed(slot, worker.crashed())
        now = self._clock()
        for slot in [s for s in self._slots.values() if s.expired(now)]:
            await self._unload(slot, "unloaded", f"idle past keep_alive {slot.keep_alive:g}s")

    async def reap_forever(self, interval_s: float = 1.0) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.reap()
            except Exception:  # one model that fails to close must not stop keep_alive for the others
                log.exception("unloading idle models failed; trying again in %ss", interval_s)

    def close(self) -> None:
        for slot in self._slots.values():
            slot.close()
        self._slots.clear()


def _without_isolation(options: dict[str, Any]) -> dict[str, Any]:
    """The engine's own options: `isolation` is the runtime's to read, not the engine's."""
    return {k: v for k, v in options.items() if k != "isolation"}
