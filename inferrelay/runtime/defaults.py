"""What a registration leaves out, filled in from the model's format: its capabilities and engine chain."""

from __future__ import annotations

from collections.abc import Iterable

from inferrelay.engines.base import Capability, Engine
from inferrelay.engines.registry import engine_classes
from inferrelay.errors import bad_request
from inferrelay.models.facts import ModelFacts

DECODER = [Capability.CHAT, Capability.COMPLETION]


def default_capabilities(format: str, facts: ModelFacts) -> list[Capability]:
    if format == "sentence_transformers":
        return [Capability.EMBEDDINGS]
    if format == "gguf":
        return list(DECODER)
    architecture = (facts.architecture or "").lower()
    if format == "hf_folder" and ("causallm" in architecture or "forconditionalgeneration" in architecture):
        return list(DECODER)
    if format == "hf_folder" and architecture:
        return [Capability.EMBEDDINGS]
    raise bad_request(
        f"cannot tell what a {format} model of architecture {facts.architecture!r} serves: give capabilities",
        param="capabilities",
    )


def default_engines(
    format: str, capabilities: list[Capability], engines: Iterable[type[Engine]] | None = None
) -> list[str]:
    """The chain for a model of `format`: each engine that says it is chosen for such a model
    (`Engine.default_for`), by its `preference`; `engines` defaults to every installed engine class."""
    encoder = Capability.EMBEDDINGS in capabilities
    candidates = engine_classes() if engines is None else engines
    chosen = sorted(
        (e for e in candidates if e.chosen_by_default(format, encoder)), key=lambda e: (e.preference, e.name)
    )
    if not chosen:
        raise bad_request(f"no engine serves a {format} model for {capabilities[0].value}: give engines", "engines")
    return [e.name for e in chosen]
