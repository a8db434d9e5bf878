"""Dynamic batching with the real MiniLM on onnx and torch: concurrent requests gathered into one call on the
loaded model (in its worker process) get the vectors each would get alone, and one caller's over-long input
fails that caller only."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest

from inferrelay.config.embedded import MINILM
from inferrelay.config.runtime import RuntimeSettings
from inferrelay.engines.base import Embeddings
from inferrelay.engines.registry import EngineRegistry
from inferrelay.errors import ErrorKind, InferrelayError
from inferrelay.routing import work
from inferrelay.routing.coalesce import EmbedCoalescer
from inferrelay.runtime.pool import ModelPool
from inferrelay.runtime.slots import LoadedSlot

pytestmark = pytest.mark.slow

REQUESTS = [
    ["The cat sits on the mat."],
    ["A quick brown fox jumps over the lazy dog.", "x"],
    ["Paris is the capital of France."],
    ["Embeddings map text to vectors, and short texts pad with short texts when sorted by length."],
    ["It rained all day in Lisbon, and the trams were late.", "Rain.", "Trams run on rails in many old cities."],
    ["hello"],
    ["What is the boiling point of water at sea level, in degrees Celsius?"],
    ["One more sentence about nothing in particular."],
]
TOO_LONG = "word " * 400  # past MiniLM's 256 tokens
T = TypeVar("T")


@dataclass
class Loaded:
    pool: ModelPool
    slot: LoadedSlot
    loop: asyncio.AbstractEventLoop  # one loop throughout: the thread that started the worker must live on

    def run(self, work: Awaitable[T]) -> T:
        return self.loop.run_until_complete(work)


@pytest.fixture(scope="module", params=["onnx", "torch"])
def loaded(request: pytest.FixtureRequest, test_home: Path) -> Iterator[Loaded]:
    state = EngineRegistry.discover().state(request.param)
    assert state is not None, f"engine {request.param} is not registered"
    assert state.engine is not None
    assert state.probe.available, state.probe.reason
    pool = ModelPool(test_home, 30, RuntimeSettings(embed_batch_wait_ms=5))
    loop = asyncio.new_event_loop()
    slot = loop.run_until_complete(pool.slot(MINILM.model_copy(deep=True), state.engine))
    yield Loaded(pool, slot, loop)
    pool.close()
    loop.close()


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_gathered_requests_get_the_vectors_each_gets_alone(loaded: Loaded) -> None:
    pool, slot = loaded.pool, loaded.slot

    async def alone() -> list[Embeddings]:
        return [await work.embed(pool, slot, texts) for texts in REQUESTS]

    async def together() -> list[Embeddings]:
        return await asyncio.gather(*(work.embed(pool, slot, texts) for texts in REQUESTS))

    singly = loaded.run(alone())
    coalescer = vars(slot)["embed_coalescer"]
    assert isinstance(coalescer, EmbedCoalescer)
    calls_before, batches_before, batched_before = coalescer.calls, slot.batches, slot.batched_requests
    gathered = loaded.run(together())

    assert coalescer.calls - calls_before < len(REQUESTS), "the concurrent requests were gathered"
    assert slot.batches > batches_before, "the stats and /metrics count the gathered calls"
    assert slot.batched_requests - batched_before >= 2 * (slot.batches - batches_before)
    for texts, one, many in zip(REQUESTS, singly, gathered, strict=True):
        assert many.vectors.shape == (len(texts), 384)
        assert cosines(one.vectors, many.vectors).min() > 0.9999, texts
    assert sum(e.prompt_tokens for e in gathered) == sum(e.prompt_tokens for e in singly), "usage adds up exactly"
    assert all(e.prompt_tokens > 0 for e in gathered)


def test_an_over_long_input_refused_fails_its_own_caller_only(loaded: Loaded) -> None:
    pool, slot = loaded.pool, loaded.slot

    async def together() -> list[Embeddings | BaseException]:
        requests = [(REQUESTS[0], None), (["fine", TOO_LONG], False), (REQUESTS[2], None)]  # False: refuse, not cut
        calls = (work.embed(pool, slot, texts, truncate) for texts, truncate in requests)
        return await asyncio.gather(*calls, return_exceptions=True)

    first, failed, last = loaded.run(together())
    assert isinstance(failed, InferrelayError)
    assert failed.kind is ErrorKind.CONTEXT_LENGTH
    assert "input[1]" in failed.message, "the input is named as its own caller numbered it"
    assert isinstance(first, Embeddings)
    assert first.vectors.shape == (1, 384)
    assert isinstance(last, Embeddings)
    assert last.vectors.shape == (1, 384)
