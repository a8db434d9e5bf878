"""A worker's side of a batch job: load the model once, compute chunks of rows, write each as a checkpoint.

The same `Worker` runs in the coordinator's process, in a local worker process
and in a Ray actor. It never touches the manifest: it returns the record of
the file it wrote, and the coordinator alone decides what is committed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from inferrelay.batch.checkpoints import ROW, write_part
from inferrelay.batch.job import BatchJob
from inferrelay.batch.manifest import CheckpointRecord
from inferrelay.capabilities import Capability
from inferrelay.engines.base import EmbeddingModel, GenerationRequest, LoadedModel, Sampling, TextModel
from inferrelay.errors import ErrorKind, InferrelayError, classify
from inferrelay.routing.batching import Halving, embed_sorted

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Chunk:
    """Rows of one shard, by their place in it, to compute and write as the shard's part `part`."""

    shard: int
    part: int
    first_row: int  # rows the shard had done before this chunk
    positions: list[int]
    ids: list[Any]
    inputs: list[Any]  # texts to embed; prompts (str) or message lists to generate from


def _halved(size: int, half: int) -> None:
    log.warning("out of memory: batch size %d -> %d", size, half)


def describe(exc: BaseException) -> str:
    """One line for the manifest and the summary: the error's kind, message and hint."""
    error = classify(exc)
    return f"{error.kind.value}: {error.message} (hint: {error.hint})"


class Worker:
    """The model, loaded once, and the batch size that works for it on this worker."""

    def __init__(self, job: BatchJob) -> None:
        from inferrelay.batch.model import load_model
        from inferrelay.config.loading import load_settings

        self.job = job
        capability = Capability.EMBEDDINGS if job.task == "embed" else Capability.CHAT
        compile = job.compile is True and job.task == "embed"
        settings = load_settings(job.config, job.home)
        model = load_model(job.model, settings, job.engine, job.dtype, capability, compile, job.rows_left)
        self._model = model
        self._compute: Callable[[list[Any]], dict[str, pa.Array]]
        if job.task == "embed":
            self._embedder: EmbeddingModel = _expect(model, EmbeddingModel, job.model, "an embedding")
            self.halving = Halving(job.batch_size, _halved)
            self._compute = self._embed
        else:
            self._text_model = _expect(model, TextModel, job.model, "a text generation")
            self._compute = self._generate

    @property
    def batch_size(self) -> int:
        return self.halving.batch_size if self.job.task == "embed" else self.job.batch_size

    def run(self, chunk: Chunk) -> CheckpointRecord:
        return self.write(chunk, self.compute(chunk))

    def compute(self, chunk: Chunk) -> pa.Table:
        """The chunk's rows as its checkpoint holds them: each row's place in the shard, its id, its results."""
        columns = {
            ROW: pa.array(chunk.positions, type=pa.int64()),
            "id": pa.array(chunk.ids),
            **self._compute(chunk.inputs),
        }
        return pa.table(columns)

    def write(self, chunk: Chunk, table: pa.Table) -> CheckpointRecord:
        """The chunk's checkpoint file, durably; the coordinator decides when it counts."""
        return write_part(self.job.outdir, chunk.shard, chunk.part, chunk.first_row, table)

    def _embed(self, texts: list[Any]) -> dict[str, pa.Array]:
        vectors = self.halving(lambda size: embed_sorted(self._embedder, texts, size).vectors)
        flat = pa.array(vectors.astype(np.float32).ravel(), type=pa.float32())
        return {"embedding": pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1]).cast(pa.list_(pa.float32()))}

    def _generate(self, inputs: list[Any]) -> dict[str, pa.Array]:
        g = self.job.generation
        sampling = Sampling(temperature=g.temperature, top_p=g.top_p, seed=g.seed)
        answers = [
            self._text_model.generate(
                GenerationRequest(messages=as_messages(i), max_tokens=g.max_tokens, sampling=sampling)
            )
            for i in inputs
        ]
        return {
            "text": pa.array([a.text for a in answers], pa.string()),
            "prompt_tokens": pa.array([a.prompt_tokens for a in answers], pa.int64()),
            "completion_tokens": pa.array([a.completion_tokens for a in answers], pa.int64()),
            "finish_reason": pa.array([a.finish_reason for a in answers], pa.string()),
        }

    def close(self) -> None:
        self._model.close()


def as_messages(value: Any) -> list[dict[str, str]]:
    """A prompt is one user turn of a chat; a messages cell is the chat itself."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if isinstance(value, list) and all(isinstance(m, dict) and "role" in m and "content" in m for m in value):
        return [{"role": str(m["role"]), "content": str(m["content"])} for m in value]
    raise InferrelayError(
        ErrorKind.BAD_REQUEST,
        f"a generate input must be a prompt string or a list of {{role, content}} messages, got {value!r:.80}",
    )


def input_length(value: Any) -> int:
    """What the length sort sorts by: characters of the text, or of every message's content."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(len(str(m.get("content", ""))) if isinstance(m, dict) else 0 for m in value)
    return 0


def _expect(model: LoadedModel, kind: type[Any], name: str, what: str) -> Any:
    if not isinstance(model, kind):
        model.close()
        raise InferrelayError(ErrorKind.BAD_REQUEST, f"{name!r} is not {what} model", param="model")
    return model
