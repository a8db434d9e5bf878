"""`inferrelay batch embed` for real: against sentence-transformers, killed and resumed, damaged and repaired."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from inferrelay.config.embedded import MINILM
from inferrelay.config.sources import resolve_source

pytestmark = pytest.mark.slow

ROWS = 600
SMALL = ["--shard-size", "200", "--batch-size", "16", "--checkpoint-every", "2"]


def sentences(n: int = ROWS, seed: int = 0) -> list[str]:
    words = "the a cat dog sat ran on under mat tree quickly slowly red blue small large river city"
    draw = random.Random(seed)
    return [" ".join(draw.choice(words.split()) for _ in range(draw.randint(2, 40))) for _ in range(n)]


def write_input(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"id": f"row-{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    return path


def batch(home: Path, *args: str, task: str = "embed") -> subprocess.Popen[str]:
    env = {**os.environ, "INFERRELAY_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "inferrelay.cli", "batch", task, *args]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run(home: Path, *args: str, task: str = "embed") -> subprocess.CompletedProcess[str]:
    process = batch(home, *args, task=task)
    out, err = process.communicate(timeout=600)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def rows_done(outdir: Path) -> int:
    manifest = outdir / "_manifest.json"
    return sum(s["rows_done"] for s in json.loads(manifest.read_text())["shards"]) if manifest.exists() else 0


def kill_after(process: subprocess.Popen[str], outdir: Path, rows: int) -> int:
    """SIGKILL the job as soon as its manifest shows `rows` done (or when it ends); return the rows done then."""
    deadline = time.monotonic() + 300
    while process.poll() is None and rows_done(outdir) < rows and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    return rows_done(outdir)


def embeddings(outdir: Path) -> tuple[list[str], np.ndarray]:
    frame = pd.read_parquet(outdir)
    return list(frame["id"]), np.stack(frame["embedding"].to_numpy())


def test_uninterrupted_run_matches_sentence_transformers(test_home: Path, tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    texts = sentences()
    source = write_input(tmp_path / "in.jsonl", texts)
    done = run(test_home, str(source), "-o", str(tmp_path / "out"), *SMALL)
    assert done.returncode == 0, done.stderr
    ids, vectors = embeddings(tmp_path / "out")
    assert ids == [f"row-{i}" for i in range(ROWS)]
    reference = SentenceTransformer(str(resolve_source(MINILM.source).path), device="cpu").encode(texts)
    cosines = np.sum(vectors * reference, axis=1) / np.linalg.norm(reference, axis=1) / np.linalg.norm(vectors, axis=1)
    assert cosines.min() > 0.9999


def test_killed_at_random_moments_and_resumed_gives_the_same_output(test_home: Path, tmp_path: Path) -> None:
    source = write_input(tmp_path / "in.jsonl", sentences())
    whole = run(test_home, str(source), "-o", str(tmp_path / "whole"), *SMALL)
    assert whole.returncode == 0, whole.stderr
    draw = random.Random(7)
    progress = []
    for target in sorted(draw.sample(range(1, ROWS), 3)):  # kill once the job has passed a random row
        process = batch(test_home, str(source), "-o", str(tmp_path / "killed"), *SMALL)
        progress.append(kill_after(process, tmp_path / "killed", target))
    assert any(0 < done < ROWS for done in progress), f"no kill landed mid-job: rows done {progress}"
    resumed = run(test_home, str(source), "-o", str(tmp_path / "killed"), *SMALL)
    assert resumed.returncode == 0, resumed.stderr
    ids, vectors = embeddings(tmp_path / "killed")
    expected_ids, expected = embeddings(tmp_path / "whole")
    assert ids == expected_ids
    assert len(set(ids)) == ROWS
    np.testing.assert_allclose(vectors, expected, atol=1e-5)


def test_damaged_checkpoints_and_a_lost_done_marker_are_recomputed(test_home: Path, tmp_path: Path) -> None:
    source = write_input(tmp_path / "in.jsonl", sentences())
    out = tmp_path / "out"
    assert run(test_home, str(source), "-o", str(out), *SMALL).returncode == 0
    _, before = embeddings(out)
    shards = out / "_checkpoints"
    truncated = shards / "shard-00000" / "part-00001.parquet"
    truncated.write_bytes(truncated.read_bytes()[:100])
    flipped = shards / "shard-00001" / "part-00003.parquet"
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0xFF
    flipped.write_bytes(bytes(data))
    (shards / "shard-00002" / ".done").unlink()

    repaired = run(test_home, str(source), "-o", str(out), *SMALL)
    assert repaired.returncode == 0, repaired.stderr
    parts_after_truncation = 7 - 1  # shard 0 has 7 checkpoints of 32 rows (200 rows); part 1 and those after go
    assert f"{parts_after_truncation + 4} damaged checkpoints recomputed" in repaired.stdout
    assert "200 computed" not in repaired.stdout
    _, after = embeddings(out)
    np.testing.assert_allclose(after, before, atol=1e-5)


def test_a_changed_input_is_refused_unless_restart(test_home: Path, tmp_path: Path) -> None:
    source = write_input(tmp_path / "in.jsonl", sentences(50))
    out = tmp_path / "out"
    assert run(test_home, str(source), "-o", str(out)).returncode == 0
    write_input(source, sentences(50, seed=1))
    refused = run(test_home, str(source), "-o", str(out))
    assert refused.returncode == 2
    assert "input changed" in refused.stderr
    assert "--restart" in refused.stderr
    restarted = run(test_home, str(source), "-o", str(out), "--restart")
    assert restarted.returncode == 0, restarted.stderr


def test_a_shard_that_always_fails_is_reported_while_the_others_finish(test_home: Path, tmp_path: Path) -> None:
    """A prompt past SmolLM2's 2,048-token context is refused every time (generation cuts nothing; an embeddings
    input past its window is cut, so it no longer fails): its shard fails after its retries, the others finish."""
    prompts = [f"Say the number {i}." for i in range(30)]
    prompts[15] = "word " * 3000
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": f"row-{i}", "prompt": p}) + "\n" for i, p in enumerate(prompts)))
    out = tmp_path / "out"
    failed = run(test_home, str(source), "-o", str(out), "--shard-size", "10", "--max-retries", "1",
                 "--max-tokens", "1", task="generate")  # fmt: skip
    assert failed.returncode == 1
    assert "shard 1: context_length" in failed.stderr
    frame = pd.read_parquet(out)
    assert list(frame["id"]) == [f"row-{i}" for i in [*range(10), *range(20, 30)]]
    status = subprocess.run(
        [sys.executable, "-m", "inferrelay.cli", "batch", "status", str(out)], capture_output=True, text=True
    )
    assert "failed" in status.stdout
    assert "2 " in status.stdout.splitlines()[3]  # shard 1: two attempts


def test_int8_embeddings_stay_close_to_sentence_transformers_and_dtype_is_part_of_the_job(
    test_home: Path, tmp_path: Path
) -> None:
    from sentence_transformers import SentenceTransformer

    texts = sentences(200)
    source = write_input(tmp_path / "in.jsonl", texts)
    out = tmp_path / "out"
    done = run(test_home, str(source), "-o", str(out), "--dtype", "int8", "--engine", "onnx")
    assert done.returncode == 0, done.stderr
    _, vectors = embeddings(out)
    reference = SentenceTransformer(str(resolve_source(MINILM.source).path), device="cpu").encode(texts)
    cosines = np.sum(vectors * reference, axis=1) / np.linalg.norm(reference, axis=1) / np.linalg.norm(vectors, axis=1)
    assert cosines.min() > 0.97  # int8 weights: close, not equal (docs/batch.md has the measured figures)
    assert cosines.max() < 0.99999  # and really int8, not the fp32 export

    refused = run(test_home, str(source), "-o", str(out), "--engine", "onnx")
    assert refused.returncode == 2
    assert "dtype: 'int8' -> None" in refused.stderr
    torch_int8 = run(test_home, str(source), "-o", str(tmp_path / "torch"), "--dtype", "int8", "--engine", "torch")
    assert torch_int8.returncode == 2
    assert "torch runs a model in auto, float32, float16, bfloat16, not 'int8'" in torch_int8.stderr


def test_a_compiled_torch_job_writes_the_eager_vectors(test_home: Path, tmp_path: Path) -> None:
    source = write_input(tmp_path / "in.jsonl", sentences(200))
    torch_job = [str(source), "--engine", "torch", *SMALL]
    compiled = run(test_home, *torch_job, "-o", str(tmp_path / "compiled"), "--compile")
    assert compiled.returncode == 0, compiled.stderr
    assert "compiled by torch.compile" in compiled.stderr
    eager = run(test_home, *torch_job, "-o", str(tmp_path / "eager"), "--no-compile")
    assert eager.returncode == 0, eager.stderr
    assert "torch.compile" not in eager.stderr  # 200 rows: no compile unless asked
    ids, vectors = embeddings(tmp_path / "compiled")
    eager_ids, eager_vectors = embeddings(tmp_path / "eager")
    assert ids == eager_ids == [f"row-{i}" for i in range(200)]
    np.testing.assert_allclose(vectors, eager_vectors, atol=1e-5)
