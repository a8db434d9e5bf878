"""`inferrelay batch embed` against sentence-transformers and against the bare ONNX loop, on the same sentences.

In one run, on 10,000 generated sentences with all-minilm-l6-v2:
- `inferrelay batch embed` as a user runs it (a process, checkpoints on), timed end to end
  and also by its own figure (rows over compute time, without start-up);
- sentence-transformers' `encode` on the packaged model (batch 32, CPU);
- the bare loop: the ONNX encoder that the batch job uses, called over length-sorted
  batches of 32 in this process, with no manifest and no checkpoints (the ceiling);
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


def computed_rate(stdout: str) -> tuple[int, float]:
    match = re.search(r"(\d+) computed in ([\d.]+) s", stdout)
    assert match, stdout
    return int(match.group(1)), float(match.group(2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--ray", action="store_true", help="also the same job on a local Ray with one actor")
    args = parser.parse_args()
    texts = sentences(args.rows)
    work = Path(tempfile.mkdtemp(prefix="inferrelay-batch-"))
    source = work / "in.jsonl"
    source.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    results: dict[str, float] = {}

    started = time.perf_counter()
    job = batch_job(source, work / "out")
    stdout, _ = job.communicate()
    results["inferrelay_end_to_end_s"] = time.perf_counter() - started
    rows, seconds = computed_rate(stdout)
    results["inferrelay_rows_per_s"] = rows / seconds

    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(resolve_source(MINILM.source).path), device="cpu")
    started = time.perf_counter()
    model.encode(texts, batch_size=32)
    results["sentence_transformers_rows_per_s"] = len(texts) / (time.perf_counter() - started)

    from inferrelay.batch.model import load_model
    from inferrelay.engines.base import EmbeddingModel
    from inferrelay.routing.batching import embed_sorted

    encoder = load_model(MINILM.name, Settings(models=[MINILM], home=HOME))
    assert isinstance(encoder, EmbeddingModel)
    started = time.perf_counter()
    embed_sorted(encoder, texts, 32)
    results["bare_onnx_rows_per_s"] = len(texts) / (time.perf_counter() - started)

    killed = batch_job(source, work / "resumed")
    time.sleep(results["inferrelay_end_to_end_s"] / 2)
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
        results["ray_vs_inline"] = results["inferrelay_ray_1_actor_rows_per_s"] / results["inferrelay_rows_per_s"]

    results["vs_sentence_transformers"] = results["inferrelay_rows_per_s"] / results["sentence_transformers_rows_per_s"]
    results["vs_bare_onnx"] = results["inferrelay_rows_per_s"] / results["bare_onnx_rows_per_s"]
    for name, value in results.items():
        print(f"{name}: {value:.3f}" if isinstance(value, float) else f"{name}: {value}")
    (BENCH / "results").mkdir(exist_ok=True)
    (BENCH / "results" / "batch.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
