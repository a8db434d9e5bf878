"""Embedding many texts: sorted by length into batches, order restored after; halved on out of memory."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from inferrelay.engines.base import EmbeddingModel, Embeddings
from inferrelay.engines.decoding import InputTooLong
from inferrelay.errors import classify
from inferrelay.outcome import Step
from inferrelay.runtime.remediation import ladder

EMBED_BATCH = 32
T = TypeVar("T")


@dataclass(frozen=True)
class Embedded:
    """Many texts embedded, with each text's share of the prompt tokens.

    Engines count a batch's tokens as one sum (`Embeddings.prompt_tokens`), so a text's share is exact where it
    was embedded alone and split by characters where it shared a batch; the shares always add up to the count.
    """

    vectors: np.ndarray
    shares: np.ndarray  # float64, one per text

    def tokens(self, start: int = 0, stop: int | None = None) -> float:
        return float(self.shares[start:stop].sum())


def embed_sorted(
    model: EmbeddingModel,
    texts: list[str],
    batch_size: int = EMBED_BATCH,
    before_batch: Callable[[list[str]], None] | None = None,
    truncate: bool = True,
) -> Embeddings:
    """Short texts pad with short texts: on CPU this is several times faster than input order.

    `before_batch` sees each batch first, and may refuse it (the runtime's memory check does). A text past the
    model's window is cut to it, or refused when `truncate` is False.
    """
    embedded = embed_counted(model, texts, batch_size, before_batch, truncate)
    return Embeddings(embedded.vectors, round(embedded.tokens()))


def embed_counted(
    model: EmbeddingModel,
    texts: list[str],
    batch_size: int = EMBED_BATCH,
    before_batch: Callable[[list[str]], None] | None = None,
    truncate: bool = True,
) -> Embedded:
    """`embed_sorted`, keeping each text's share of the tokens (dynamic batching splits usage per caller)."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    vectors: np.ndarray | None = None
    shares = np.zeros(len(texts), dtype=np.float64)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        batch = [texts[i] for i in chunk]
        if before_batch is not None:
            before_batch(batch)
        try:
            out = model.embed(batch, truncate=truncate)
        except InputTooLong as too_long:  # name the input as the caller numbered it
            raise InputTooLong(chunk[too_long.index], too_long.length, too_long.limit) from None
        if vectors is None:
            vectors = np.empty((len(texts), out.vectors.shape[1]), dtype=np.float32)
        vectors[chunk] = out.vectors
        weights = np.array([max(len(text), 1) for text in batch], dtype=np.float64)
        shares[chunk] = out.prompt_tokens * weights / weights.sum()
    assert vectors is not None, "embed_sorted needs at least one text"
    return Embedded(vectors, shares)


class Halving:
    """The batch size that works here: out of memory (the ladder's SMALLER_BATCH rung), the batch is halved, down
    to one input, and stays so. Serving and batch jobs both embed through one."""

    def __init__(self, batch_size: int, on_halve: Callable[[int, int], None]) -> None:
        self.batch_size = batch_size
        self._on_halve = on_halve  # (from, to)

    def __call__(self, run: Callable[[int], T]) -> T:
        """`run` with the batch size, again with half of it after each out of memory."""
        while True:
            try:
                return run(self.batch_size)
            except Exception as exc:
                if Step.SMALLER_BATCH not in ladder(classify(exc).kind) or self.batch_size == 1:
                    raise
                self._on_halve(self.batch_size, self.batch_size // 2)
                self.batch_size //= 2
