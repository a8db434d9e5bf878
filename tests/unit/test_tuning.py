"""The tuning book's order: fastest first among the engines that keep the accuracy, measured under this machine's
fingerprint; the catalog applies it to the embedded and registered models, never to a chain the configuration
wrote."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from inferrelay.config.embedded import MINILM, embedded_models
from inferrelay.engines.registry import EngineRegistry
from inferrelay.runtime.catalog import ModelCatalog
from inferrelay.runtime.registry import ModelRegistry
from inferrelay.tune import fingerprint, run
from inferrelay.tune.book import COMPILED, Tuning, TuningBook
from tests.engine_here import engine_or_skip


def tuning(engine: str, value: float | None, *, keeps: bool = True, serves: bool = True, stale: bool = False) -> Tuning:
    mark = "another-machine" if stale else fingerprint.digest()
    return Tuning(MINILM.name, engine, "auto" if serves else "int8", serves, "cpu", mark, time.time(),
                  "sentences_per_s", value, None, 1.0, 1.0 if keeps else 0.98, keeps, None)  # fmt: skip


def test_fastest_accurate_engine_first_then_the_rest_in_their_order(tmp_path: Path) -> None:
    book = TuningBook(tmp_path)
    assert book.order(MINILM.name, ["onnx", "torch", "llamacpp"]) is None
    book.record([tuning("onnx", 250.0), tuning("torch", 270.0), tuning("onnx", 900.0, keeps=False, serves=False)])
    assert book.order(MINILM.name, ["onnx", "torch", "llamacpp"]) == ["torch", "onnx", "llamacpp"]
    book.record([tuning("onnx", 400.0, keeps=False), tuning("torch", 270.0)])  # a rerun replaces the rows
    assert book.order(MINILM.name, ["onnx", "torch"]) == ["torch", "onnx"]
    book.record([tuning("onnx", None, keeps=False), tuning("torch", 100.0)])  # a failed engine goes last
    assert book.order(MINILM.name, ["onnx", "torch"]) == ["torch", "onnx"]


def test_figures_within_the_noise_keep_the_configured_order(tmp_path: Path) -> None:
    book = TuningBook(tmp_path)
    book.record([tuning("onnx", 300.0), tuning("torch", 310.0)])  # 3% apart: a tie
    assert book.order(MINILM.name, ["onnx", "torch"]) == ["onnx", "torch"]
    assert book.order(MINILM.name, ["torch", "onnx"]) == ["torch", "onnx"]
    book.record([tuning("onnx", 300.0), tuning("torch", 320.0)])  # 6.7% apart
    assert book.order(MINILM.name, ["onnx", "torch"]) == ["torch", "onnx"]
    book.record([tuning("onnx", 100.0), tuning("torch", 103.0), tuning("llamacpp", 110.0)])
    assert book.order(MINILM.name, ["onnx", "torch", "llamacpp"]) == ["llamacpp", "onnx", "torch"]


def test_a_tuning_from_another_fingerprint_is_stale(tmp_path: Path) -> None:
    book = TuningBook(tmp_path)
    book.record([tuning("torch", 270.0, stale=True), tuning("onnx", 250.0, stale=True)])
    assert book.order(MINILM.name, ["onnx", "torch"]) is None
    assert all(t.view()["stale"] for t in book.of(MINILM.name))


def test_the_catalog_orders_embedded_models_but_not_a_written_chain(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    registry.seed(embedded_models())
    TuningBook(tmp_path).record([tuning("onnx", 250.0), tuning("torch", 270.0)])
    catalog = ModelCatalog(embedded_models(), registry)
    spec = catalog.get(MINILM.name)
    assert spec is not None
    assert spec.engines == ["torch", "onnx"]
    assert not catalog.pinned(MINILM.name)
    written = MINILM.model_copy(update={"engines": ["onnx", "torch"], "context_length": 128})
    pinned = ModelCatalog([written], registry)
    assert pinned.pinned(MINILM.name)
    kept = pinned.get(MINILM.name)
    assert kept is not None
    assert kept.engines == ["onnx", "torch"]


def test_a_servers_tune_takes_what_another_recorded_while_it_waited(tmp_path: Path, monkeypatch: Any) -> None:
    book = TuningBook(tmp_path)
    book.record([tuning("torch", 200.0), tuning("onnx", 180.0)])

    def measured(*args: Any) -> None:
        raise AssertionError("measured again although fresh results were recorded")

    monkeypatch.setattr(run, "measure_alone", measured)
    taken = run.tune(MINILM, tmp_path, EngineRegistry.discover(), fresh_enough=True)
    assert sorted((t.engine, t.value) for t in taken) == [("onnx", 180.0), ("torch", 200.0)]
    with pytest.raises(AssertionError, match="measured again"):  # `inferrelay tune` always measures
        run.tune(MINILM, tmp_path, EngineRegistry.discover())


def test_one_tune_at_a_time_per_home(tmp_path: Path, monkeypatch: Any) -> None:
    """Another process holds the home's tuning lock: a tune waits for it (two at once measure each other)."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(tmp_path / "tuning.lock")], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert holder.stdout is not None
    assert holder.stdin is not None
    assert holder.stdout.readline() == b"held\n"
    started: list[str] = []
    monkeypatch.setattr(run, "_tune", lambda *args: started.append("measuring") or [])
    waiting = threading.Thread(target=run.tune, args=(MINILM, tmp_path, EngineRegistry.discover()))
    waiting.start()
    waiting.join(0.5)
    assert waiting.is_alive()
    assert started == [], "a tune started while another held the lock"
    holder.stdin.close()  # the holder ends, and its lock with it
    holder.wait(timeout=30)
    waiting.join(30)
    assert started == ["measuring"]


HOLD_LOCK = """
import fcntl, sys
lock = open(sys.argv[1], "a")
fcntl.flock(lock, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.read()
"""


def compiled(value: float, *, keeps: bool = True, stale: bool = False) -> Tuning:
    mark = "another-machine" if stale else fingerprint.digest()
    return Tuning(MINILM.name, "torch", COMPILED, False, "cpu", mark, time.time(), "sentences_per_s", value, None,
                  20.0, 1.0 if keeps else 0.98, keeps, None)  # fmt: skip


def test_a_compiled_torch_encoder_is_measured_for_jobs_only(tmp_path: Path) -> None:
    engine_or_skip("torch")
    engines = EngineRegistry.discover()
    assert ("torch", COMPILED, False) in run.plan(MINILM, engines)
    assert ("torch", COMPILED, False) not in run.plan(MINILM, engines, jobs=False)  # a server's own tune
    bf16 = MINILM.model_copy(update={"dtype": "bfloat16"})
    assert all(step[1] != COMPILED for step in run.plan(bf16, engines))  # compiled only at float32
    smollm = next(m for m in embedded_models() if MINILM.name != m.name)
    assert all(step[1] != COMPILED for step in run.plan(smollm, engines))  # encoders only


def test_a_long_job_runs_compiled_torch_only_where_it_pays_for_its_compile(tmp_path: Path) -> None:
    book = TuningBook(tmp_path)
    chain, long, short = ["onnx", "torch"], 200_000, 50_000
    assert not book.compiled_pays(MINILM.name, chain, long)  # nothing measured
    served = [tuning("onnx", 310.0), tuning("torch", 290.0)]  # loads in 1 s; the compiled one in 20 s
    book.record([*served, compiled(330.0)])  # 19 s more to load, 0.2 ms less a row: even at 97,000 rows
    assert book.compiled_pays(MINILM.name, chain, long)
    assert not book.compiled_pays(MINILM.name, chain, short)
    assert book.order(MINILM.name, chain) == ["onnx", "torch"]  # a server's order ignores the compiled row
    assert not book.compiled_pays(MINILM.name, ["onnx"], long)  # torch not in the chain
    book.record([*served, compiled(300.0)])  # slower than onnx as served
    assert not book.compiled_pays(MINILM.name, chain, long)
    book.record([*served, compiled(400.0, keeps=False)])  # other vectors
    assert not book.compiled_pays(MINILM.name, chain, long)
    book.record([*served, compiled(400.0, stale=True)])  # another machine's
    assert not book.compiled_pays(MINILM.name, chain, long)
