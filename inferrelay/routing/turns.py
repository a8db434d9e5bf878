"""Fair turns for embeddings: a request larger than one batch is served a batch at a time.

Each batch is a call of its own in the model's queue, and the next is queued
only when the last is done, so the other callers of the same model take their
turns between its batches (round-robin between requests, not first come first
served): a short request sent while 2,048 inputs are embedded waits for one
batch, not for all of them. A request whose caller went away, or whose
deadline passed, stops after the batch in flight.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import numpy as np

from inferrelay.engines.base import Embeddings
from inferrelay.engines.decoding import InputTooLong
from inferrelay.routing.coalesce import Answer

EmbedPart = Callable[[list[str]], Awaitable[Answer]]


async def in_turns(texts: list[str], size: int, embed_part: EmbedPart) -> Answer:
    """`texts` embedded by `embed_part`, `size` at a time, shortest first (short texts pad with short texts), rows
    and errors given back in the caller's order and numbering."""
    if len(texts) <= size:
        return await embed_part(texts)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    vectors: np.ndarray | None = None
    tokens = 0
    halvings: list[tuple[int, int]] = []
    for start in range(0, len(order), size):
        chunk = order[start : start + size]
        answer = await embed_part([texts[i] for i in chunk])
        halvings.extend(answer.halvings)
        if answer.error is not None:
            return Answer(error=_renumbered(answer.error, chunk), halvings=halvings)
        assert answer.embeddings is not None
        if vectors is None:
            vectors = np.empty((len(texts), answer.embeddings.vectors.shape[1]), dtype=np.float32)
        vectors[chunk] = answer.embeddings.vectors
        tokens += answer.embeddings.prompt_tokens
    assert vectors is not None
    return Answer(Embeddings(vectors, tokens), halvings=halvings)


def _renumbered(error: BaseException, chunk: list[int]) -> BaseException:
    """An input refused for its length is named as the caller numbered it."""
    if isinstance(error, InputTooLong):
        return InputTooLong(chunk[error.index], error.length, error.limit)
    return error
