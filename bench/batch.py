"""`inferrelay batch embed` against sentence-transformers and against the bare ONNX loop, on the same sentences.

In one run, on 10,000 generated sentences with all-minilm-l6-v2:
- sentence-transformers' `encode` on the packaged model (batch 32, CPU), whose vectors are the reference;
- for the fp32 encoder and the int8 one (`--dtype int8`): `inferrelay batch embed` as a user
  runs it (a process, checkpoints on), timed end to end and by its own figure (rows over
  compute time, without start-up), and its vectors' cosine to the reference; and the bare
  loop: the same ONNX encoder called over length-sorted batches of 32 in this process, with
  no manifest and no checkpoints (the ceiling);
and the time a resume loses: a job killed half way, then run again.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/batch.py [--rows 10000] [--ray]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))

from inferrelay.config.embedded import MINILM  # noqa: E402
from inferrelay.config.schema import Settings  # noqa: E402
from inferrelay.config.sources import resolve_source  # noqa: E402

HOME = REPO / ".cache" / "test-home"
WORDS = [
    "the",
    "a",
    "cat",
    "dog",
    "sat",
    "ran",
    "on",
    "under",
    "mat",
    "tree",
    "quickly",
    "slowly",
    "red",
    "blue",
    "small",
    "large",
    "river",
    "city",
]


def sentences(n: int) -> list[str]:
    draw = random.Random(0)
    return [" ".join(draw.choice(WORDS) for _ in range(draw.randint(3, 60))) for _ in range(n)]


def batch_job(source: Path, out: Path, *options: str) -> subprocess.Popen[str]:
    env = {**os.environ, "INFERRELAY_HOME": str(HOME), "HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled"}
    command = [
        sys.executable,
        "-m",
        "inferrelay.cli",
        "batch",
        "embed",
        str(source),
        "-o",
        str(out),
        "--model",
        MINILM.name,
        "--no-progress",
        *options,
    ]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def contender(kind: str, dtype: str, source: Path, save: Path | None) -> float:
    """One measured run in this (fresh) process: sentence-transformers or the bare ONNX loop; rows per second.

    The bare loop is the ceiling: the encoder the job loads, over length-sorted
    batches of 32, with no manifest and no checkpoints.
    """
    texts = [json.loads(line)["text"] for line in source.read_text().splitlines()]
    if kind == "st":
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(resolve_source(MINILM.source).path), device="cpu")
        started = time.perf_counter()
        vectors = model.encode(texts, batch_size=32)
    else:
        from inferrelay.batch.model import load_model
        from inferrelay.engines.base import EmbeddingModel
        from inferrelay.routing.batching import embed_sorted

        encoder = load_model(MINILM.name, Settings(models=[MINILM], home=HOME), dtype=dtype)
        assert isinstance(encoder, EmbeddingModel)
        started = time.perf_counter()
        vectors = embed_sorted(encoder, texts, 32).vectors
    rate = len(texts) / (time.perf_counter() - started)
    if save is not None:
        np.save(save, vectors)
    return rate


def measure(kind: str, dtype: str, source: Path, save: Path | None = None) -> float:
    command = [sys.executable, __file__, "--contender", kind, "--dtype", dtype, "--input", str(source)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([*command, *(["--save", str(save)] if save else [])], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return float(done.stdout.split()[-1])


def computed_rate(stdout: str) -> tuple[int, float]:
    match = re.search(r"(\d+) computed in ([\d.]+) s", stdout)
    assert match, stdout
    return int(match.group(1)), float(match.group(2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--ray", action="store_true", help="also the same job on a local Ray with one actor")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each contender; the best counts")
    parser.add_argument("--contender", choices=["st", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    parser.add_argument("--input", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--save", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.contender:
        print(f"rate: {contender(args.contender, args.dtype, args.input, args.save)}")
        return
    texts = sentences(args.rows)
    work = Path(tempfile.mkdtemp(prefix="inferrelay-batch-"))
    source = work / "in.jsonl"
    source.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    results: dict[str, float] = {}

    # Every contender runs in a fresh process, in rounds (each round runs each once); the best run counts.
    reference_file = work / "reference.npy"
    rates: dict[str, list[float]] = {}
    for attempt in range(args.repeat):
        rates.setdefault("st", []).append(measure("st", "float32", source, reference_file))
        for dtype in ("float32", "int8"):
            started = time.perf_counter()
            stdout, _ = batch_job(source, work / f"out-{dtype}-{attempt}", "--dtype", dtype).communicate()
            results[f"{dtype}_end_to_end_s"] = time.perf_counter() - started
            rows, seconds = computed_rate(stdout)
            rates.setdefault(f"job-{dtype}", []).append(rows / seconds)
            rates.setdefault(f"bare-{dtype}", []).append(measure("bare", dtype, source))
    results["sentence_transformers_rows_per_s"] = max(rates["st"])
    reference = np.load(reference_file)
    for dtype in ("float32", "int8"):
        rate = results[f"{dtype}_inferrelay_rows_per_s"] = max(rates[f"job-{dtype}"])
        results[f"{dtype}_bare_onnx_rows_per_s"] = max(rates[f"bare-{dtype}"])
        results[f"{dtype}_vs_sentence_transformers"] = rate / results["sentence_transformers_rows_per_s"]
        results[f"{dtype}_vs_bare_onnx"] = rate / results[f"{dtype}_bare_onnx_rows_per_s"]
        vectors = np.stack(pd.read_parquet(work / f"out-{dtype}-0")["embedding"].to_numpy())
        cosines = (
            np.sum(vectors * reference, axis=1) / np.linalg.norm(vectors, axis=1) / np.linalg.norm(reference, axis=1)
        )
        results[f"{dtype}_min_cosine_to_sentence_transformers"] = float(cosines.min())
        results[f"{dtype}_mean_cosine_to_sentence_transformers"] = float(cosines.mean())

    killed = batch_job(source, work / "resumed")
    time.sleep(results["float32_end_to_end_s"] / 2)  # a kill about half way
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    manifest = json.loads((work / "resumed" / "_manifest.json").read_text())
    done_at_kill = sum(s["rows_done"] for s in manifest["shards"])
    started = time.perf_counter()
    resumed, _ = batch_job(source, work / "resumed").communicate()
    resume_s = time.perf_counter() - started
    recomputed, _ = computed_rate(resumed)
    results["resume_rows_done_at_kill"] = done_at_kill
    results["resume_rows_recomputed"] = recomputed - (args.rows - done_at_kill)
    results["resume_s"] = resume_s

    if args.ray:
        ray_out, _ = batch_job(source, work / "ray", "--backend", "ray", "--workers", "1").communicate()
        rows, seconds = computed_rate(ray_out)
        results["inferrelay_ray_1_actor_rows_per_s"] = rows / seconds
        results["ray_vs_inline"] = (
            results["inferrelay_ray_1_actor_rows_per_s"] / results["float32_inferrelay_rows_per_s"]
        )

    for name, value in results.items():
        print(f"{name}: {value:.3f}" if isinstance(value, float) else f"{name}: {value}")
    (BENCH / "results").mkdir(exist_ok=True)
    (BENCH / "results" / "batch.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
