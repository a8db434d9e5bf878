"""`inferrelay batch embed` on a GPU machine: one worker process per GPU, pinned with CUDA_VISIBLE_DEVICES."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from inferrelay.config.embedded import MINILM
from inferrelay.engines.devices import visible_gpus
from inferrelay.engines.torch import TorchEngine
from tests.e2e.test_batch import run, sentences, write_input

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")


def test_batch_embed_runs_one_worker_per_gpu(tmp_path: Path, test_home: Path) -> None:
    texts = sentences(4000, seed=3)
    source = write_input(tmp_path / "in.jsonl", texts)
    out = tmp_path / "out"
    done = run(test_home, str(source), "-o", str(out), "--model", MINILM.name, "--engine", "torch")
    print("\n" + done.stderr[-2000:])
    assert done.returncode == 0, done.stderr
    gpus = visible_gpus()
    started = [line for line in done.stderr.splitlines() if "worker" in line and "started" in line]
    assert len(started) == len(gpus)
    assert all(" on GPU " in line for line in started)
    table = pd.read_parquet(out)
    assert list(table["id"]) == [f"row-{i}" for i in range(len(texts))]
    got = np.stack(table["embedding"].to_numpy()[:64])
    want = TorchEngine().load(MINILM.model_copy(update={"dtype": "float32"}), "cpu", test_home).embed(texts[:64])
    assert (np.sum(got * want.vectors, axis=1)).min() > 0.99  # both unit vectors; bf16 on the GPU
