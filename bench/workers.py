"""Engine worker processes against the in-process path, in one run on one machine.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/workers.py [--chat-engine llamacpp] [--embed-engine onnx]

Chat: one greedy stream of SmolLM2 (up to 128 tokens), tokens/s and time to
first token, best of five, the same engine loaded in the server's process and
in a worker. Embeddings: 1,024 sentences of MiniLM in batches of 32,
sentences/s, best of five. Memory: what loading added to this process's
resident size, each way (a worker's weights must not be copied here). The
two paths alternate round by round so drift hits both. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from inferrelay.config.embedded import MINILM, SMOLLM2
from inferrelay.engines.base import EmbeddingModel, GenerationRequest, LoadedModel, Sampling, TextModel
from inferrelay.engines.registry import EngineRegistry
from inferrelay.runtime.memory import process_rss, release_freed
from inferrelay.runtime.workers import start_worker

RESULTS = Path(__file__).parent / "results" / "workers.json"
STORY = [{"role": "user", "content": "Write a long story about a dragon."}]
WORDS = "the a cat dog sat ran on under mat tree quickly slowly red blue small large river city"
ROUNDS = 5


def chat_figures(model: TextModel) -> dict[str, float]:
    request = GenerationRequest(messages=STORY, max_tokens=128, sampling=Sampling(temperature=0.0))
    start = time.perf_counter()
    first = 0.0
    tokens = 0
    for piece in model.stream(request):
        if not first and piece.text:
            first = time.perf_counter() - start
        tokens = piece.completion_tokens or tokens
    seconds = time.perf_counter() - start
    return {"tokens_per_s": tokens / seconds, "ttft_ms": first * 1000}


def embed_figures(model: EmbeddingModel, texts: list[str]) -> dict[str, float]:
    start = time.perf_counter()
    for i in range(0, len(texts), 32):
        model.embed(texts[i : i + 32])
    return {"sentences_per_s": len(texts) / (time.perf_counter() - start)}


def loaded_both_ways(engine: Any, spec: Any, home: Path) -> tuple[LoadedModel, LoadedModel, dict[str, int]]:
    release_freed()
    before = process_rss()
    in_process = engine.load(spec, "cpu", home)
    grown_in_process = process_rss() - before
    before = process_rss()
    worker = start_worker(engine, spec, "cpu", home)
    grown_by_worker = process_rss() - before
    memory = {"server_rss_growth_in_process": grown_in_process, "server_rss_growth_with_worker": grown_by_worker}
    memory["worker_resident"] = worker.worker.resident_bytes() or 0  # type: ignore[attr-defined]
    return in_process, worker, memory


def best(rounds: list[dict[str, float]], key: str, low: bool = False) -> float:
    values = [r[key] for r in rounds]
    return round(min(values) if low else max(values), 2)


def compare(measure: Callable[[Any], dict[str, float]], in_process: Any, worker: Any) -> dict[str, Any]:
    measure(in_process), measure(worker)  # warm-up
    rounds: dict[str, list[dict[str, float]]] = {"in_process": [], "worker": []}
    for _ in range(ROUNDS):
        rounds["in_process"].append(measure(in_process))
        rounds["worker"].append(measure(worker))
    keys = rounds["worker"][0].keys()
    return {way: {k: best(r, k, low=k.endswith("_ms")) for k in keys} for way, r in rounds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chat-engine", default="llamacpp")
    parser.add_argument("--embed-engine", default="onnx")
    parser.add_argument("--home", type=Path, default=Path(tempfile.gettempdir()) / "inferrelay-bench")
    options = parser.parse_args()
    registry = EngineRegistry.discover()
    results: dict[str, Any] = {"machine": platform.processor() or platform.machine(), "rounds": ROUNDS}

    engine = registry.state(options.chat_engine).engine  # type: ignore[union-attr]
    in_process, worker, memory = loaded_both_ways(engine, SMOLLM2, options.home)
    chat = compare(chat_figures, in_process, worker)
    chat["tokens_per_s_ratio"] = round(chat["worker"]["tokens_per_s"] / chat["in_process"]["tokens_per_s"], 3)
    chat["ttft_ms_difference"] = round(chat["worker"]["ttft_ms"] - chat["in_process"]["ttft_ms"], 2)
    results["chat"] = {"engine": options.chat_engine, **chat, "memory": memory}
    worker.close()
    in_process.close()

    texts = [" ".join(random.Random(i).choice(WORDS.split()) for _ in range(4 + i % 40)) for i in range(1024)]
    engine = registry.state(options.embed_engine).engine  # type: ignore[union-attr]
    in_process, worker, memory = loaded_both_ways(engine, MINILM, options.home)
    embed = compare(lambda m: embed_figures(m, texts), in_process, worker)
    embed["sentences_per_s_ratio"] = round(
        embed["worker"]["sentences_per_s"] / embed["in_process"]["sentences_per_s"], 3
    )
    results["embeddings"] = {"engine": options.embed_engine, **embed, "memory": memory}
    worker.close()
    in_process.close()

    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
