"""What a request does on a loaded local model: a whole answer, a stream of pieces, embeddings.

Each runs on the slot's own worker (runtime/slots.py). Concurrent embeddings
requests are gathered into one call (routing/coalesce.py), a large one a batch
at a time so that others take turns (routing/turns.py); their batches pass
the runtime's memory check one by one and halve on out of memory
(routing/batching.py), each halving recorded as a remedy of the requests in it.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from inferrelay.engines.base import EmbeddingModel, Embeddings, GenerationRequest, LoadedModel, Piece, TextModel
from inferrelay.errors import ErrorKind, InferrelayError
from inferrelay.outcome import Step
from inferrelay.routing.batching import EMBED_BATCH, embed_counted
from inferrelay.routing.coalesce import EmbedCoalescer, EmbedRun, coalescer_for
from inferrelay.routing.turns import in_turns
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


async def embed(pool: ModelPool, slot: LoadedSlot, texts: list[str], truncate: bool | None = None) -> Embeddings:
    """Gathered with the other embeddings requests to this model into one call (routing/coalesce.py). Texts past
    the model's window are cut to it unless `truncate` (the request's; None: the model's own setting) is False."""
    _as(slot.model, EmbeddingModel)
    coalescer = coalescer_for(slot, lambda: EmbedCoalescer(slot, _runner(pool, slot), EMBED_BATCH, _wait_s(pool)))
    cut = slot.spec.truncate if truncate is None else truncate
    answer = await in_turns(texts, coalescer.batch_size, lambda part: coalescer.embed(part, cut))
    for size, half in answer.halvings:  # recorded here, on the request's task, where its remedies are kept
        record(slot.spec.name, f"local/{slot.placement.engine}", Step.SMALLER_BATCH, f"{size} -> {half}")
    if answer.error is not None:
        raise answer.error
    assert answer.embeddings is not None
    return answer.embeddings


def _runner(pool: ModelPool, slot: LoadedSlot) -> EmbedRun:
    """Length-sorted batches on the slot's worker, each passing the runtime's memory check first. The model is
    read at each call: a closed slot's engine objects must not be kept alive by its coalescer."""
    facts = facts_for(slot.spec.source)
    element_bytes = DTYPE_BYTES.get(slot.placement.dtype, DTYPE_BYTES["float32"])

    def admit(batch: list[str]) -> None:
        if facts is not None:  # no input is charged past the window: the engine cuts or refuses it
            needed = encoder_activations(facts, batch, element_bytes, slot.model.context_length)
            pool.admit_request(slot, needed, f"a batch of {len(batch)} inputs")

    return lambda texts, size, truncate: embed_counted(_as(slot.model, EmbeddingModel), texts, size, admit, truncate)


def _wait_s(pool: ModelPool) -> float:
    # The pool holds the runtime settings; it has no public accessor for them yet.
    return pool._runtime.embed_batch_wait_ms / 1000


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
