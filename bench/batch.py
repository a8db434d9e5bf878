"""`inferrelay batch embed` against sentence-transformers and the bare loop of its engine, on the same sentences.

On 10,000 generated sentences (3-60 words) with all-minilm-l6-v2, on the CPU, batches of 32, every
contender in a fresh process, its model loaded before its clock starts, the texts already read:
- `st`: sentence-transformers' `encode` on the packaged model (fp32), whose vectors are the reference;
- `job-ENGINE`: `inferrelay batch embed --engine ENGINE --dtype float32` as a user runs it (a process,
  checkpoints, manifest and Parquet output on), by its own figure: rows over the job's run (from its
  manifest's first save to its last output file), without start-up, model load and input reading;
- `bare-ENGINE`: the same engine's encoder over length-sorted batches of 32 in one process, with no
  manifest and no checkpoints (what the job would be with no cost of its own);
- the same two for torch through torch.compile (`job-torch-compile`, `--compile`; its compile is part of
  the load, so it counts in the run's whole time, kept beside each rate, not in its rate);
- the same two for onnx's int8 encoder (`--dtype int8`; not at sentence-transformers' precision).
Each engine is named (`--engine`), so the figures do not depend on the tunings the home holds.

The contenders run in rounds, each round every contender once, the order rotated each round (a
machine's load drifts); each figure is the median of its rounds with its spread (min-max), and each
ratio is the median of the rounds' paired ratios. The load average at the start, and the cores other
processes kept busy during each run (min, median, max), are kept: figures from a busy machine are
noisy. Then the time a resume loses: a job killed half way, then run again.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/batch.py [--rows 10000] [--repeat 3] [--engines torch onnx]
        [--no-int8] [--no-compile] [--no-resume] [--ray]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import signal
import statistics
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
WORDS = ["the", "a", "cat", "dog", "sat", "ran", "on", "under", "mat", "tree"]
WORDS += ["quickly", "slowly", "red", "blue", "small", "large", "river", "city"]
BATCH = 32


def sentences(n: int) -> list[str]:
    draw = random.Random(0)
    return [" ".join(draw.choice(WORDS) for _ in range(draw.randint(3, 60))) for _ in range(n)]


def batch_job(source: Path, out: Path, *options: str) -> subprocess.Popen[str]:
    env = {**os.environ, "INFERRELAY_HOME": str(HOME), "HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled"}
    command = [sys.executable, "-m", "inferrelay.cli", "batch", "embed", str(source), "-o", str(out)]
    command += ["--model", MINILM.name, "--batch-size", str(BATCH), "--no-progress", *options]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def contender(name: str, source: Path, save: Path | None) -> float:
    """One measured run in this (fresh) process, `st` or `bare-ENGINE[-int8]`; rows per second."""
    texts = [json.loads(line)["text"] for line in source.read_text().splitlines()]
    if name == "st":
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(resolve_source(MINILM.source).path), device="cpu")
        started = time.perf_counter()
        vectors = model.encode(texts, batch_size=BATCH)
    else:
        from inferrelay.batch.model import load_model
        from inferrelay.engines.base import EmbeddingModel
        from inferrelay.routing.batching import embed_sorted

        engine, dtype, compile = parse(name)
        settings = Settings(models=[MINILM], home=HOME)
        encoder = load_model(MINILM.name, settings, engine=engine, dtype=dtype, compile=compile)
        assert isinstance(encoder, EmbeddingModel)
        assert encoder.engine_name == engine
        started = time.perf_counter()
        vectors = embed_sorted(encoder, texts, BATCH).vectors
    rate = len(texts) / (time.perf_counter() - started)
    if save is not None:
        np.save(save, vectors)
    return rate


def parse(name: str) -> tuple[str, str, bool]:
    """`job-onnx-int8` -> ("onnx", "int8", False); `bare-torch-compile` -> ("torch", "float32", True)."""
    _, engine, *rest = name.split("-")
    compile = rest == ["compile"]
    return engine, rest[0] if rest and not compile else "float32", compile


def run_once(name: str, source: Path, out: Path, save: Path | None) -> float:
    """Rows per second of one run of `name`, each in a process of its own."""
    if name.startswith("job-"):
        engine, dtype, compile = parse(name)
        compiling = "--compile" if compile else "--no-compile"
        stdout, _ = batch_job(source, out, "--engine", engine, "--dtype", dtype, compiling).communicate()
        rows, seconds = computed_rate(stdout)
        return rows / seconds
    command = [sys.executable, __file__, "--contender", name, "--input", str(source)]
    done = subprocess.run(
        [*command, *(["--save", str(save)] if save else [])],
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    return float(done.stdout.split()[-1])


def computed_rate(stdout: str) -> tuple[int, float]:
    match = re.search(r"(\d+) computed in ([\d.]+) s", stdout)
    assert match, stdout
    return int(match.group(1)), float(match.group(2))


def busy_cpu_s() -> float:
    """CPU seconds the whole machine has spent busy since boot (/proc/stat), every process counted."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


Runs = dict[str, list[float]]


def rounds(names: list[str], source: Path, work: Path, repeat: int) -> tuple[Runs, Runs, list[float]]:
    """Every contender once a round, the order rotated each round; the rates, each run's whole time (its process
    from start to exit: start-up, load and a compile included), and the cores other processes kept busy during
    each run (the machine's busy time less this bench's): the noise in a figure."""
    rates: Runs = {name: [] for name in names}
    walls: Runs = {name: [] for name in names}
    others = []
    for attempt in range(repeat):
        shift = attempt % len(names)
        for name in names[shift:] + names[:shift]:
            busy, ours, started = busy_cpu_s(), children_cpu_s(), time.monotonic()
            save = work / "reference.npy" if name == "st" and attempt == 0 else None
            rates[name].append(run_once(name, source, work / f"out-{name}-{attempt}", save))
            wall = time.monotonic() - started
            walls[name].append(wall)
            others.append(max(0.0, (busy_cpu_s() - busy) - (children_cpu_s() - ours)) / wall)
            rate = f"{rates[name][-1]:.1f} rows/s, {wall:.1f} s whole"
            print(f"round {attempt}: {name} {rate} (others busy {others[-1]:.2f} cores)")
    return rates, walls, others


def summarize(rates: dict[str, list[float]], work: Path) -> dict[str, object]:
    results: dict[str, object] = {}
    for name, runs in rates.items():
        results[f"{name}_rows_per_s"] = statistics.median(runs)
        results[f"{name}_spread"] = [min(runs), max(runs)]
    reference = np.load(work / "reference.npy")
    for name, runs in rates.items():
        if not name.startswith("job-"):
            continue
        for base in ("st", "bare" + name.removeprefix("job")):
            paired = [job / other for job, other in zip(runs, rates[base], strict=True)]
            results[f"{name}_vs_{base}"] = statistics.median(paired)
            results[f"{name}_vs_{base}_spread"] = [min(paired), max(paired)]
        vectors = np.stack(pd.read_parquet(work / f"out-{name}-0")["embedding"].to_numpy())
        cosines = np.sum(vectors * reference, axis=1) / np.linalg.norm(vectors, axis=1)
        cosines /= np.linalg.norm(reference, axis=1)
        results[f"{name}_min_cosine_to_st"] = float(cosines.min())
        results[f"{name}_mean_cosine_to_st"] = float(cosines.mean())
    return results


def resume_loss(source: Path, work: Path, rows: int) -> dict[str, object]:
    """A job (the chain's first engine) killed about half way, then resumed: rows computed twice, and the time."""
    started = time.perf_counter()
    batch_job(source, work / "whole").communicate()
    killed = batch_job(source, work / "resumed")
    time.sleep((time.perf_counter() - started) / 2)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    manifest = json.loads((work / "resumed" / "_manifest.json").read_text())
    done_at_kill = sum(s["rows_done"] for s in manifest["shards"])
    started = time.perf_counter()
    resumed, _ = batch_job(source, work / "resumed").communicate()
    recomputed, _ = computed_rate(resumed)
    return {
        "resume_rows_done_at_kill": done_at_kill,
        "resume_rows_recomputed": recomputed - (rows - done_at_kill),
        "resume_s": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3, help="rounds; each figure is the median of its rounds")
    parser.add_argument("--engines", nargs="+", default=["torch", "onnx"], help="fp32 engines to run the job on")
    parser.add_argument("--no-int8", action="store_true", help="leave out onnx's int8 encoder")
    parser.add_argument("--no-compile", action="store_true", help="leave out torch.compile's torch encoder")
    parser.add_argument("--no-resume", action="store_true", help="leave out the killed and resumed job")
    parser.add_argument("--ray", action="store_true", help="also the same job on a local Ray with one actor")
    parser.add_argument("--contender", help=argparse.SUPPRESS)
    parser.add_argument("--input", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--save", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.contender:
        print(f"rate: {contender(args.contender, args.input, args.save)}")
        return
    work = Path(tempfile.mkdtemp(prefix="inferrelay-batch-"))
    source = work / "in.jsonl"
    source.write_text("".join(json.dumps({"text": t}) + "\n" for t in sentences(args.rows)))
    compiled = ["torch-compile"] if "torch" in args.engines and not args.no_compile else []
    variants = [*args.engines, *compiled, *([] if args.no_int8 else ["onnx-int8"])]
    names = ["st", *(f"{kind}-{v}" for v in variants for kind in ("job", "bare"))]
    results: dict[str, object] = {"rows": args.rows, "rounds": args.repeat, "load_at_start": os.getloadavg()[0]}
    rates, walls, others = rounds(names, source, work, args.repeat)
    results["others_busy_cores"] = [min(others), statistics.median(others), max(others)]
    results |= {"runs": rates, "whole_s": walls} | summarize(rates, work)
    if not args.no_resume:
        results |= resume_loss(source, work, args.rows)
    if args.ray:
        ray_out, _ = batch_job(source, work / "ray", "--backend", "ray", "--workers", "1").communicate()
        rows, seconds = computed_rate(ray_out)
        results["job_ray_1_actor_rows_per_s"] = rows / seconds
    for name, value in results.items():
        print(f"{name}: {value:.3f}" if isinstance(value, float) else f"{name}: {value}")
    (BENCH / "results").mkdir(exist_ok=True)
    (BENCH / "results" / "batch.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
