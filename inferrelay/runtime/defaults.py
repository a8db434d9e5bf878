"""What a registration leaves out, filled in from the model's format: its capabilities and engine chain."""

from __future__ import annotations

from inferrelay.engines.base import Capability
from inferrelay.errors import bad_request
from inferrelay.models.facts import ModelFacts

DECODER = [Capability.CHAT, Capability.COMPLETION]
ENGINES_BY_FORMAT = {
    ("gguf", False): ["llamacpp", "onnx", "torch"],
    ("hf_folder", False): ["onnx", "torch"],
    ("hf_folder", True): ["onnx", "torch"],
    ("sentence_transformers", True): ["onnx", "torch"],
    ("onnx", True): ["onnx"],
}
"""The engine chain by (format, is an encoder): the fastest engine on a CPU first."""


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


def default_engines(format: str, capabilities: list[Capability]) -> list[str]:
    encoder = Capability.EMBEDDINGS in capabilities
    engines = ENGINES_BY_FORMAT.get((format, encoder))
    if engines is None:
        raise bad_request(f"no engine serves a {format} model for {capabilities[0].value}: give engines", "engines")
    return list(engines)
