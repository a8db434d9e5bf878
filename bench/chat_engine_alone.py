"""What llama.cpp's batched decoding gives on this machine with no server at all: the ceiling for the served
chat figures in bench/concurrency_chat.py.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/chat_engine_alone.py

For each concurrency the embedded SmolLM2 GGUF is loaded in this process by the llamacpp engine with as many
sequences as callers (`parallel`, each `slot_context` cells), and that many threads ask for 64 greedy tokens at
once. Reported: aggregate tokens/s, and each level over concurrency 1. Each level runs in a fresh process so one
load's threads cannot slow the next. Nothing is asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

TOPICS = "dragon lighthouse river robot garden winter market violin desert harbour comet forest clock bridge owl ship"
LEVELS = {1: (4, 2048), 4: (4, 2048), 8: (8, 1024), 16: (16, 512)}  # callers: (parallel, slot_context)


def one_level(callers: int, parallel: int, slot_context: int, tokens: int) -> float:
    from inferrelay.config.embedded import SMOLLM2
    from inferrelay.engines.base import GenerationRequest, TokenTextModel
    from inferrelay.engines.decoding import Sampling
    from inferrelay.engines.registry import EngineRegistry

    state = EngineRegistry.discover().state("llamacpp")
    assert state is not None
    assert state.engine is not None
    options = {"llamacpp": {"parallel": parallel, "slot_context": slot_context}}
    model = state.engine.load(SMOLLM2.model_copy(update={"engine_options": options}), "cpu",
                              Path(tempfile.mkdtemp(prefix="inferrelay-alone-")))  # fmt: skip
    assert isinstance(model, TokenTextModel)
    topics = TOPICS.split()
    prompts = [
        model.encode(GenerationRequest(messages=[{"role": "user", "content": f"Tell me a story about a {topic}."}]))
        for topic in topics[:callers]
    ]
    list(model.generate_ids(prompts[0], 8, Sampling(0.0)))  # warm up
    counts = [0] * callers

    def caller(i: int) -> None:
        counts[i] = sum(1 for _ in model.generate_ids(prompts[i], tokens, Sampling(0.0)))

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(callers)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    model.close()
    return sum(counts) / elapsed


def run(tokens: int = 64) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for callers, (parallel, context) in LEVELS.items():
        command = [sys.executable, __file__, "--one", str(callers), str(parallel), str(context), str(tokens)]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        rate = float(done.stdout.strip().splitlines()[-1])
        figures[str(callers)] = {"parallel": parallel, "slot_context": context, "tokens_per_s": round(rate, 1)}
    base = figures["1"]["tokens_per_s"]
    for level in figures.values():
        level["vs_concurrency_1"] = round(level["tokens_per_s"] / base, 2)
    return figures


if __name__ == "__main__":
    if sys.argv[1:2] == ["--one"]:
        print(one_level(*(int(a) for a in sys.argv[2:6])))
    else:
        print(json.dumps(run(), indent=2))
