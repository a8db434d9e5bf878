"""torch.compile for the torch engine's encoders (engines/torch_compile.py): the same vectors as eager at every
batch shape, and a compile that fails here leaves a model that answers eager and says why."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inferrelay.batch.model import dedicated
from inferrelay.config.embedded import MINILM
from tests.engine_here import engine_or_skip

TEXTS = ["a", "the cat sat on the mat", "a longer sentence about a river that runs under a large red city " * 4]


def _torch_engine() -> Any:
    return engine_or_skip("torch")


def _load(engine: Any, home: Path, compile: bool) -> Any:
    spec = MINILM.model_copy(update={"engines": ["torch"], "engine_options": dedicated({}, compile)})
    return engine.load(spec, "cpu", home)


def test_compiled_encoder_gives_eager_vectors_at_every_shape(test_home: Path) -> None:
    engine = _torch_engine()
    eager, compiled = _load(engine, test_home, False), _load(engine, test_home, True)
    try:
        assert compiled.compile_failure is None
        assert type(compiled._model).__name__ == "OptimizedModule"  # really behind torch.compile
        assert type(eager._model).__name__ != "OptimizedModule"
        for texts in (TEXTS, TEXTS[:1], TEXTS[1:], TEXTS * 5):
            got, want = compiled.embed(texts), eager.embed(texts)
            assert got.vectors.shape == want.vectors.shape == (len(texts), 384)
            np.testing.assert_allclose(got.vectors, want.vectors, atol=1e-5)
            assert got.prompt_tokens == want.prompt_tokens
    finally:
        eager.close()
        compiled.close()


def test_a_compile_that_fails_leaves_an_eager_model_that_says_why(
    test_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    def broken(model: Any, **options: Any) -> Any:
        def call(**inputs: Any) -> Any:
            raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found")

        return call

    engine = _torch_engine()
    monkeypatch.setattr(torch, "compile", broken)
    model = _load(engine, test_home, True)
    try:
        assert model.compile_failure == "RuntimeError: InvalidCxxCompiler: No working C++ compiler found"
        eager = _load(engine, test_home, False)
        np.testing.assert_array_equal(model.embed(TEXTS).vectors, eager.embed(TEXTS).vectors)
        eager.close()
    finally:
        model.close()


def test_a_long_job_runs_compiled_torch_where_the_tune_measured_it_pays(own_home: Path) -> None:
    import time

    from inferrelay.batch.model import load_model
    from inferrelay.config.loading import load_settings
    from inferrelay.tune import fingerprint
    from inferrelay.tune.book import COMPILED, Tuning, TuningBook

    _torch_engine()

    def row(engine: str, precision: str, value: float) -> Tuning:
        return Tuning(MINILM.name, engine, precision, precision == "auto", "cpu", fingerprint.digest(), time.time(),
                      "sentences_per_s", value, None, 1.0, 1.0, True, None)  # fmt: skip

    book = TuningBook(own_home)
    book.record([row("onnx", "auto", 310.0), row("torch", "auto", 290.0), row("torch", COMPILED, 330.0)])
    settings = load_settings(None, own_home)
    short = load_model(MINILM.name, settings)  # a job too short to compile: the chain as the server orders it
    long = load_model(MINILM.name, settings, compile=True, rows=1_000_000)
    try:
        assert short.engine_name == "onnx"
        assert long.engine_name == "torch"
        assert type(long._model).__name__ == "OptimizedModule"  # type: ignore[attr-defined]
        assert long.compile_failure is None  # type: ignore[attr-defined]
        a, b = long.embed(TEXTS).vectors, short.embed(TEXTS).vectors  # type: ignore[attr-defined]
        assert (a * b).sum(axis=1).min() > 0.9999  # another engine's vectors: the same to float precision
        book.record([row("onnx", "auto", 340.0), row("torch", "auto", 290.0), row("torch", COMPILED, 330.0)])
        again = load_model(MINILM.name, settings, compile=True, rows=1_000_000)
        assert again.engine_name == "onnx"  # onnx as served is faster than torch compiled here
        again.close()
    finally:
        short.close()
        long.close()
