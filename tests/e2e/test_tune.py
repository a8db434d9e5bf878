"""`inferrelay tune` on the real engines of the embedded embedding model, and the server serving in the measured
order: by the command, and by itself with `runtime.tune: auto`. Figures are never asserted on, only that the
order follows them."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from inferrelay.config.embedded import MINILM
from inferrelay.config.sources import resolve_source

pytestmark = pytest.mark.slow


@pytest.fixture
def home(own_home: Path) -> Path:
    return own_home


def measured_order(rows: list[dict[str, Any]], chain: list[str]) -> list[str]:
    """The measured engines at the head of `chain`, checked against the rule (docs/tuning.md): one goes ahead of an
    engine configured before it only when faster by more than 5%, and never stays behind one it beats by more."""
    value = {r["engine"]: r["value"] for r in rows if r["serves"] and r["keeps_accuracy"] and r["value"] is not None}
    ranked = chain[: len(value)]
    assert set(ranked) == set(value)
    for ahead, behind in itertools.combinations(ranked, 2):
        if MINILM.engines.index(ahead) > MINILM.engines.index(behind):
            assert value[ahead] > value[behind] * 1.05, (ranked, value)
        else:
            assert value[behind] <= value[ahead] * 1.05, (ranked, value)
    return ranked


def test_tune_measures_each_engine_and_the_server_follows_the_order(home: Path, start_server: Any) -> None:
    env = {**os.environ, "INFERRELAY_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "inferrelay.cli", "tune", MINILM.name, "--seconds", "0.5", "--json"],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    rows = result["tunings"]
    assert {(r["engine"], r["serves"]) for r in rows} >= {("onnx", True), ("torch", True)}
    for row in rows:
        assert row["fingerprint"]
        assert row["stale"] is False
        if row["serves"]:  # both engines serve the model's own float32 weights: the reference's vectors
            assert row["value"] > 0
            assert row["accuracy"] >= 0.999
    order = measured_order(rows, result["chain"])

    folder = resolve_source(MINILM.source).path
    doctor = subprocess.run([sys.executable, "-m", "inferrelay.cli", "doctor", str(folder), "--json"],
                            env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert doctor.returncode == 0, doctor.stderr
    tuned = json.loads(doctor.stdout)["tuned"]
    assert {(t["engine"], t["precision"]) for t in tuned} == {(r["engine"], r["precision"]) for r in rows}

    server = start_server(home)
    view = httpx.get(f"{server.url}/api/v1/runtime/models/{MINILM.name}", timeout=30).json()
    assert view["engines"][: len(order)] == order
    assert view["tuning"]["chain_from"] == "tuning"
    answer = httpx.post(f"{server.url}/v1/embeddings", json={"model": MINILM.name, "input": "hi"}, timeout=120)
    assert answer.status_code == 200
    assert answer.headers["x-inferrelay-backend"].endswith(order[0])


def test_auto_tunes_a_model_on_its_first_request(home: Path, start_server: Any, tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.mkdir()
    (config / "providers.yaml").write_text("providers: {}\n")
    (config / "model-mappings.yaml").write_text("runtime:\n  tune: auto\n  tune_seconds: 0.5\n")
    server = start_server(home, "--config", str(config))
    before = httpx.get(f"{server.url}/api/v1/runtime/models/{MINILM.name}", timeout=30).json()
    assert before["tuning"]["measured"] == []
    answer = httpx.post(f"{server.url}/v1/embeddings", json={"model": MINILM.name, "input": "hi"}, timeout=600)
    assert answer.status_code == 200
    after = httpx.get(f"{server.url}/api/v1/runtime/models/{MINILM.name}", timeout=30).json()
    order = measured_order(after["tuning"]["measured"], after["engines"])
    assert {"onnx", "torch"} <= set(order)
    assert after["engines"][: len(order)] == order
    assert answer.headers["x-inferrelay-backend"].endswith(order[0])
