"""Engines on a CUDA GPU, each beside the library it wraps, in one run: tokens/s and embeddings/s, with the card named.

    HF_HUB_OFFLINE=1 python bench/gpu.py --out gpu.json [--home DIR]

Generation: one greedy stream of up to 256 tokens from SmolLM2 per engine
that can run here (torch, deepspeed, vllm), against transformers'
`generate` on the same weights, device and dtype. Embeddings: 8,192
sentences of all-MiniLM-L6-v2 per engine (torch; onnx where onnxruntime has
CUDA), against sentence-transformers on the same device and dtype. Each
figure is the best of three; an engine that cannot run says why. A
benchmark, not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from inferrelay.config.embedded import MINILM, SMOLLM2
from inferrelay.config.sources import resolve_source
from inferrelay.engines.base import EmbeddingModel, GenerationRequest, Sampling, TextModel
from inferrelay.engines.registry import EngineRegistry
from inferrelay.engines.torch import from_pretrained_args

STORY = [{"role": "system", "content": "You are a helpful assistant."},
         {"role": "user", "content": "Write a long story about a dragon."}]  # fmt: skip
MAX_TOKENS = 128
SENTENCES = 8192
BATCH = 256
WORDS = "the a cat dog sat ran on under mat tree quickly slowly red blue small large river city"


def best(runs: int, work: Callable[[], tuple[int, float]]) -> float:
    """The highest rate of `runs` runs; `work` returns (items, seconds)."""
    rates = []
    for _ in range(runs):
        items, seconds = work()
        rates.append(items / seconds)
    return max(rates)


def timed(fn: Callable[[], int]) -> tuple[int, float]:
    torch.cuda.synchronize()
    start = time.perf_counter()
    items = fn()
    torch.cuda.synchronize()
    return items, time.perf_counter() - start


def engine_tokens_per_s(name: str, home: Path, dtype: str) -> dict[str, Any]:
    state = EngineRegistry.discover().state(name)
    if state is None or state.engine is None or not state.probe.available:
        return {"engine": name, "skipped": state.probe.reason if state else "not installed"}
    started = time.perf_counter()
    try:
        model = state.engine.load(SMOLLM2.model_copy(update={"dtype": dtype}), "cuda", home)
    except Exception as exc:  # a benchmark reports what failed and goes on
        return {"engine": name, "skipped": f"load failed: {type(exc).__name__}: {exc}"[:400]}
    load_s = time.perf_counter() - started
    assert isinstance(model, TextModel)
    request = GenerationRequest(messages=STORY, max_tokens=MAX_TOKENS, sampling=Sampling(temperature=0.0))
    model.generate(request)  # warm-up (CUDA kernels, graphs)

    def stream() -> int:
        first: float | None = None
        count = 0
        start = time.perf_counter()
        for piece in model.stream(request):
            if first is None and piece.text:
                first = time.perf_counter() - start
            count = piece.completion_tokens or count
        ttft.append(first or 0.0)
        return count

    ttft: list[float] = []
    rate = best(2, lambda: timed(stream))
    model.close()
    return {"engine": name, "dtype": dtype, "tokens_per_s": round(rate, 1), "ttft_ms": round(min(ttft) * 1000, 1),
            "load_s": round(load_s, 2)}  # fmt: skip


def transformers_tokens_per_s(dtype: str) -> dict[str, Any]:
    import transformers

    source = resolve_source(SMOLLM2.source)
    args = from_pretrained_args(source)
    tokenizer = transformers.AutoTokenizer.from_pretrained(**args)
    model = transformers.AutoModelForCausalLM.from_pretrained(**args, dtype=getattr(torch, dtype)).to("cuda").eval()
    ids = tokenizer.apply_chat_template(STORY, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    ids = {k: v.to("cuda") for k, v in ids.items()}

    def generate() -> int:
        with torch.inference_mode():
            out = model.generate(**ids, max_new_tokens=MAX_TOKENS, do_sample=False)
        return int(out.shape[1] - ids["input_ids"].shape[1])

    generate()
    return {"peer": "transformers generate", "dtype": dtype, "tokens_per_s": round(best(2, lambda: timed(generate)), 1)}


def engine_embeddings_per_s(name: str, home: Path, texts: list[str], dtype: str) -> dict[str, Any]:
    state = EngineRegistry.discover().state(name)
    if state is None or state.engine is None or not state.probe.available:
        return {"engine": name, "skipped": state.probe.reason if state else "not installed"}
    if name == "onnx":
        import onnxruntime

        if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
            return {"engine": name, "skipped": f"onnxruntime {onnxruntime.__version__} has no CUDAExecutionProvider"}
    model = state.engine.load(MINILM.model_copy(update={"dtype": dtype}), "cuda", home)
    assert isinstance(model, EmbeddingModel)
    ordered = sorted(texts, key=len)  # what the server's dynamic batching and the batch jobs do

    def embed() -> int:
        for i in range(0, len(ordered), BATCH):
            model.embed(ordered[i : i + BATCH])
        return len(ordered)

    embed()
    rate = best(3, lambda: timed(embed))
    model.close()
    return {"engine": name, "dtype": dtype, "sentences_per_s": round(rate, 1)}


def sentence_transformers_per_s(texts: list[str], dtype: str) -> dict[str, Any]:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(resolve_source(MINILM.source).path), device="cuda")
    model.to(getattr(torch, dtype))

    def encode() -> int:
        model.encode(texts, batch_size=BATCH)
        return len(texts)

    encode()
    return {"peer": "sentence-transformers encode", "dtype": dtype,
            "sentences_per_s": round(best(3, lambda: timed(encode)), 1)}  # fmt: skip


def sentences(n: int) -> list[str]:
    words = WORDS.split()
    draw = random.Random(0)
    return [" ".join(draw.choice(words) for _ in range(draw.randint(4, 60))) for _ in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--home", type=Path, default=Path(tempfile.gettempdir()) / "inferrelay-bench-gpu")
    parser.add_argument("--engines", default="torch,deepspeed,vllm")
    parser.add_argument("--only", choices=("generation", "embeddings"))
    options = parser.parse_args()
    options.home.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "card": torch.cuda.get_device_name(0), "torch": torch.__version__, "cuda": torch.version.cuda,
        "generation": [], "embeddings": [],
    }  # fmt: skip
    texts = sentences(SENTENCES)
    for dtype in ("bfloat16", "float32") if options.only != "generation" else ():
        results["embeddings"].append(sentence_transformers_per_s(texts, dtype))
        for name in ("torch", "onnx"):
            results["embeddings"].append(engine_embeddings_per_s(name, options.home, texts, dtype))
        print(json.dumps(results["embeddings"][-3:]), file=sys.stderr, flush=True)
    if options.only != "embeddings":
        results["generation"].append(transformers_tokens_per_s("bfloat16"))
    for name in options.engines.split(",") if options.only != "embeddings" else ():
        results["generation"].append(engine_tokens_per_s(name, options.home, "bfloat16"))
        print(json.dumps(results["generation"][-1]), file=sys.stderr, flush=True)
    options.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
