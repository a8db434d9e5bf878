"""The standard workload `inferrelay tune` runs on one engine at one precision: sentences/s in batches of 32 for
an embedding model, tokens/s and time to first token of a greedy answer for a chat model; with the output kept
to compare against the reference (the first engine measured in float32)."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from inferrelay.capabilities import Capability
from inferrelay.config.schema import ModelSpec
from inferrelay.engines.base import EmbeddingModel, Engine, GenerationRequest, TextModel
from inferrelay.engines.decoding import Sampling

BATCH = 32
WORDS = [
    "the",
    "a",
    "model",
    "server",
    "request",
    "answer",
    "token",
    "engine",
    "memory",
    "batch",
    "queue",
    "fast",
    "slow",
    "river",
    "city",
    "light",
    "night",
    "morning",
    "people",
    "machine",
    "data",
    "language",
    "simple",
    "careful",
    "small",
    "large",
    "first",
    "last",
    "every",
    "other",
    "question",
    "result",
]
PROMPT = [{"role": "user", "content": "Write a short story about a lighthouse keeper and a storm."}]
ANSWER_TOKENS = 32
SAME_VECTORS = 0.999  # least cosine to the reference for an embedding engine to keep the model's accuracy


@dataclass
class Measured:
    value: float | None
    first_token_ms: float | None
    load_s: float | None
    output: Any = None
    error: str | None = None


def sentences(count: int = 2 * BATCH, seed: int = 7) -> list[str]:
    """Typical inputs, short to a paragraph: 3-60 words each, the same every run."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 60))) + "." for _ in range(count)]


def measure(engine: Engine, spec: ModelSpec, device: str, home: Path, seconds: float) -> Measured:
    started = time.perf_counter()
    try:
        loaded = engine.load(spec, device, home)
    except Exception as exc:
        return Measured(None, None, None, error=f"{type(exc).__name__}: {exc}")
    load_s = time.perf_counter() - started
    try:
        if Capability.EMBEDDINGS in spec.capabilities and isinstance(loaded, EmbeddingModel):
            return _embeddings(loaded, seconds, load_s)
        if isinstance(loaded, TextModel):
            return _generation(loaded, seconds, load_s)
        return Measured(None, None, load_s, error="the engine loaded no model this workload can drive")
    except Exception as exc:
        return Measured(None, None, load_s, error=f"{type(exc).__name__}: {exc}")
    finally:
        loaded.close()


def _embeddings(model: EmbeddingModel, seconds: float, load_s: float) -> Measured:
    texts = sentences()
    reference = np.asarray(model.embed(texts[:BATCH]).vectors, dtype=np.float32)  # also the warm-up
    done, started = 0, time.perf_counter()
    while done < 2 * BATCH or time.perf_counter() - started < seconds:
        model.embed(texts[done % len(texts) :][:BATCH] or texts[:BATCH])
        done += BATCH
    return Measured(done / (time.perf_counter() - started), None, load_s, output=reference)


def _generation(model: TextModel, seconds: float, load_s: float) -> Measured:
    """Greedy answers until `seconds` are spent (at least one): the first is also the warm-up, and is kept alone
    when it took the whole time."""
    request = GenerationRequest(messages=PROMPT, max_tokens=ANSWER_TOKENS, sampling=Sampling(0.0))
    runs: list[tuple[float, float, int, str]] = []  # (seconds, first token seconds, tokens, text)
    while not runs or sum(r[0] for r in runs) < seconds:
        started, first, tokens, text = time.perf_counter(), None, 0, []
        for piece in model.stream(request):
            first = first or time.perf_counter()
            text.append(piece.text)
            tokens += piece.completion_tokens  # on the last piece
        ended = time.perf_counter()
        runs.append((ended - started, (first or ended) - started, tokens, "".join(text)))
    measured = runs[1:] or runs  # the warm-up counts only when it was all the time there was
    busy, tokens = sum(r[0] for r in measured), sum(r[2] for r in measured)
    first_ms = float(np.median([r[1] for r in measured])) * 1000
    return Measured(tokens / busy if busy else None, first_ms, load_s, output=runs[0][3])


def accuracy(output: Any, reference: Any, capability: Capability) -> float | None:
    """Cosine of the worst vector (embeddings), or the share of the reference's first 16 words the answer
    repeats in place (chat)."""
    if output is None or reference is None:
        return None
    if capability is Capability.EMBEDDINGS:
        a, b = np.asarray(output, dtype=np.float32), np.asarray(reference, dtype=np.float32)
        cos = (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        return float(cos.min())
    ours, theirs = str(output).split()[:16], str(reference).split()[:16]
    return sum(x == y for x, y in zip(ours, theirs, strict=False)) / max(1, len(theirs))


def keeps_accuracy(value: float | None, capability: Capability, serves: bool) -> bool:
    """Embeddings: the vectors must be the reference's (cosine >= 0.999). Chat: the precision an engine serves
    the model in keeps it (an engine running a quantized file natively parts from a float32 answer within a few
    tokens and is still the model as published); a lower precision must repeat at least half the words."""
    if value is None:
        return capability is not Capability.EMBEDDINGS and serves
    if capability is Capability.EMBEDDINGS:
        return value >= SAME_VECTORS
    return serves or value >= 0.5
