"""`inferrelay tune MODEL`: the standard workload on every engine of the model's chain that can run here, at the
precision it serves in and at its lower step, each bounded in time; the results go to the tuning book.

One tune at a time per home: two at once would each measure the other's load (the servers of `serve --workers N`
each meeting a model first, or a user's `inferrelay tune` beside `runtime.tune: auto`). A tune waits for the one
running; a server's own tune (`fresh_enough`) then takes the results the other just recorded instead of measuring.
"""

from __future__ import annotations

import fcntl
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from inferrelay.capabilities import Capability
from inferrelay.config.schema import ModelSpec
from inferrelay.engines.registry import EngineRegistry
from inferrelay.tune import fingerprint
from inferrelay.tune.alone import measure_alone
from inferrelay.tune.book import COMPILED, Tuning, TuningBook
from inferrelay.tune.workload import Measured, accuracy, keeps_accuracy

REFERENCE_ENGINES = ("torch", "onnx", "llamacpp")
"""Whose float32 output is the reference, first found first: torch runs the weights as the model's authors do."""


def plan(spec: ModelSpec, registry: EngineRegistry, jobs: bool = True) -> list[tuple[str, str, bool]]:
    """(engine, dtype, serves) to measure: the reference engine first; with `jobs`, an encoder's torch compiled too."""
    encoder = Capability.EMBEDDINGS in spec.capabilities
    steps: list[tuple[str, str, bool]] = []
    for name in sorted(spec.engines, key=lambda e: REFERENCE_ENGINES.index(e) if e in REFERENCE_ENGINES else 99):
        steps.append((name, spec.dtype, True))
        state = registry.state(name)
        engine = state.engine if state else None
        served = "float32" if spec.dtype == "auto" else spec.dtype
        lower = engine.lower_precision(encoder, served) if engine is not None else None
        if lower is not None:
            steps.append((name, lower, False))
        if name == "torch" and encoder and jobs and served == "float32":
            steps.append((name, COMPILED, False))
    return steps


def tune(
    spec: ModelSpec,
    home: Path,
    registry: EngineRegistry,
    device: str = "cpu",
    seconds: float = 3.0,
    on_step: Callable[[str], None] | None = None,
    fresh_enough: bool = False,
    jobs: bool = True,
) -> list[Tuning]:
    """`jobs`: also what only batch jobs run (a compiled torch encoder); a server's own tune leaves it out."""
    with one_at_a_time(home):
        recorded = [t for t in TuningBook(home).of(spec.name) if t.fingerprint == fingerprint.digest()]
        if fresh_enough and recorded:
            return recorded
        return _tune(spec, home, registry, device, seconds, on_step, jobs)


@contextmanager
def one_at_a_time(home: Path) -> Iterator[None]:
    """Hold the home's tuning lock (an flock: released when its holder ends, however it ends)."""
    home.mkdir(parents=True, exist_ok=True)
    with (home / "tuning.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _tune(
    spec: ModelSpec,
    home: Path,
    registry: EngineRegistry,
    device: str,
    seconds: float,
    on_step: Callable[[str], None] | None,
    jobs: bool,
) -> list[Tuning]:
    capability = Capability.EMBEDDINGS if Capability.EMBEDDINGS in spec.capabilities else Capability.CHAT
    metric = "sentences_per_s" if capability is Capability.EMBEDDINGS else "tokens_per_s"
    reference = None
    tunings = []
    for name, dtype, serves in plan(spec, registry, jobs):
        if on_step:
            on_step(f"{name} {dtype}")
        state = registry.state(name)
        if state is None or state.engine is None:
            reason = state.probe.reason if state else "not installed"
            measured = Measured(None, None, None, error=f"cannot run here: {reason}")
        else:
            precision, _, mode = dtype.partition("+")
            options = spec.engine_options  # as the model is served; the compiled step turns the compile on
            if mode:
                options = {**options, "torch": {**options.get("torch", {}), "compile": True}}
            one = spec.model_copy(update={"dtype": precision, "engines": [name], "engine_options": options})
            measured = measure_alone(one, device, home, seconds)  # a process of its own: tune/alone.py
        if reference is None and measured.output is not None and dtype in ("auto", "float32"):
            reference = measured.output
        agreement = accuracy(measured.output, reference, capability)
        tunings.append(
            Tuning(
                spec.name,
                name,
                dtype,
                serves,
                device,
                fingerprint.digest(),
                time.time(),
                metric,
                measured.value,
                measured.first_token_ms,
                measured.load_s,
                agreement,
                measured.error is None and keeps_accuracy(agreement, capability, serves),
                measured.error,
            )
        )
    return tunings
