"""What the doctor says about a model: facts shown as a table, and problems, each with what to do."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inferrelay.models.facts import ModelFacts


@dataclass(frozen=True)
class Problem:
    what: str
    fix: str
    blocking: bool = True  # the model cannot be used as it is


@dataclass(frozen=True)
class Component:
    """One component of a diffusers pipeline, judged on its own."""

    name: str
    library: str | None
    class_name: str | None
    present: bool
    config_ok: bool
    weights_ok: bool | None  # None: a component without weights (a scheduler, a tokenizer)
    note: str = ""

    @property
    def usable(self) -> bool:
        return self.present and self.config_ok and self.weights_ok is not False


@dataclass
class Inspection:
    path: Path
    format: str | None  # gguf, hf_folder, sentence_transformers, onnx, diffusers; None when unknown
    capability: str | None = None  # chat, embeddings, image; None when the files do not say
    architecture: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    components: list[Component] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    facts: ModelFacts | None = None

    @property
    def usable(self) -> bool:
        return not any(p.blocking for p in self.problems)

    def problem(self, what: str, fix: str, blocking: bool = True) -> None:
        self.problems.append(Problem(what, fix, blocking))
