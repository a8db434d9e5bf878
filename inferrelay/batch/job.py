"""What a batch job computes and how: everything a coordinator and its workers need to agree on."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Task = Literal["embed", "generate"]


@dataclass(frozen=True, kw_only=True)
class Generation:
    """Generation parameters; greedy by default, so a resumed job writes what the first run would have."""

    max_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0


@dataclass(frozen=True, kw_only=True)
class BatchJob:
    """Built by keyword: sixteen fields, several of one type, are too many to keep in order."""

    task: Task
    input: Path
    outdir: Path
    model: str
    home: Path
    config: Path | None = None
    text_column: str = "text"
    id_column: str = "id"
    engine: str | None = None  # one engine of the model's chain, instead of the first that loads
    dtype: str | None = None  # instead of the model's own (e.g. int8 with the onnx engine)
    batch_size: int = 32
    shard_size: int = 10_000
    checkpoint_every: int = 8
    max_retries: int = 2
    generation: Generation = Generation()
    compile: bool | None = None  # torch.compile a torch encoder; None: when the rows left pay for it
    rows_left: int = 0  # rows the job has left to compute when it starts (run_job sets it)

    @property
    def chunk_rows(self) -> int:
        """Rows a worker computes between two checkpoints."""
        return self.batch_size * self.checkpoint_every

    def parameters(self) -> dict[str, Any]:
        """What the output depends on: changing any of these makes a different job."""
        common = {
            "task": self.task,
            "model": self.model,
            "engine": self.engine,
            "dtype": self.dtype,
            "text_column": self.text_column,
            "id_column": self.id_column,
        }
        if self.task == "embed":
            return common
        g = self.generation
        return common | {"max_tokens": g.max_tokens, "temperature": g.temperature, "top_p": g.top_p, "seed": g.seed}


COMPILE_ROWS = 50_000
"""Rows left from which a job compiles a torch encoder it runs: the compile (6-25 s on 2 cores) pays back at
1.15x eager torch's speed after some 12,000 to 50,000 rows (docs/batch.md). Whether the job runs torch rather than
the chain's first engine is the tune's measurement (tune/book.py `compiled_pays`)."""


def compile_for(rows_left: int, asked: bool | None) -> bool:
    """Whether a job with `rows_left` compiles a torch encoder: as asked, else when the rows pay for the compile."""
    return asked if asked is not None else rows_left >= COMPILE_ROWS
