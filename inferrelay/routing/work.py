"""What a request does on a loaded local model: a whole answer, a stream of pieces, embeddings.

Each runs on the slot's own worker (runtime/slots.py). Embeddings pass the
runtime's memory check batch by batch and halve the batch on out of memory
(routing/batching.py), recording each halving as a remedy of the request.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from inferrelay.engines.base import EmbeddingModel, Embeddings, GenerationRequest, LoadedModel, Piece, TextModel
from inferrelay.errors import ErrorKind, InferrelayError
from inferrelay.outcome import Step
from inferrelay.routing.batching import EMBED_BATCH, Halving, embed_sorted
from inferrelay.runtime.memory import DTYPE_BYTES, encoder_activations
from inferrelay.runtime.placement import facts_for
from inferrelay.runtime.pool import ModelPool
from inferrelay.runtime.remediation import record
from inferrelay.runtime.slots import LoadedSlot, WorkerStream


async def generate(slot: LoadedSlot, generation: GenerationRequest) -> Piece:
    model: TextModel = _as(slot.model, TextModel)
    return await slot.call(lambda: model.generate(generation))


def stream(slot: LoadedSlot, generation: GenerationRequest) -> WorkerStream[Piece]:
    """The pieces as the engine makes them; a failure before the first one still falls back."""
    model: TextModel = _as(slot.model, TextModel)
    return slot.stream(lambda: model.stream(generation))


async def embed(pool: ModelPool, slot: LoadedSlot, texts: list[str]) -> Embeddings:
    model: EmbeddingModel = _as(slot.model, EmbeddingModel)
    facts = facts_for(slot.spec.source)
    element_bytes = DTYPE_BYTES.get(slot.placement.dtype, DTYPE_BYTES["float32"])

    def admit(batch: list[str]) -> None:
        if facts is not None:
            pool.admit_request(
                slot, encoder_activations(facts, batch, element_bytes), f"a batch of {len(batch)} inputs"
            )

    halvings: list[tuple[int, int]] = []  # recorded here, on the request's task, where its remedies are kept
    halving = Halving(EMBED_BATCH, lambda size, half: halvings.append((size, half)))
    try:
        return await slot.call(lambda: halving(lambda size: embed_sorted(model, texts, size, admit)))
    finally:
        for size, half in halvings:
            record(slot.spec.name, f"local/{slot.placement.engine}", Step.SMALLER_BATCH, f"{size} -> {half}")


def _as(model: LoadedModel, kind: type[Any]) -> Any:
    if not isinstance(model, kind):
        raise InferrelayError(
            ErrorKind.ENGINE_UNAVAILABLE, f"{model.engine_name} loaded this model without {kind.__name__}"
        )
    return model


async def generate_several(slot: LoadedSlot, generation: GenerationRequest, n: int) -> list[Piece]:
    """`n` answers to one request (OpenAI's `n`), one after another in one turn of the model's queue; a seeded
    request seeds choice i with seed + i, so each choice differs where sampling does and the whole answer
    repeats."""
    model: TextModel = _as(slot.model, TextModel)
    seed = generation.sampling.seed
    requests = [
        replace(generation, sampling=replace(generation.sampling, seed=None if seed is None else seed + i))
        for i in range(n)
    ]
    return await slot.call(lambda: [model.generate(request) for request in requests])
