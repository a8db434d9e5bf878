"""Each real embedding engine cuts an input past its window as sentence-transformers does, from a prefix of the
text (never the whole), and refuses it when told not to cut."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from inferrelay.capabilities import Capability
from inferrelay.config.embedded import MINILM, SMOLLM2
from inferrelay.config.sources import resolve_source
from inferrelay.engines.base import EmbeddingModel
from inferrelay.engines.decoding import InputTooLong
from inferrelay.engines.registry import EngineRegistry

pytestmark = pytest.mark.slow

WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog",
    "while",
    "seven",
    "zebras",
    "quietly",
    "eat",
    "bananas",
]
LONG = " ".join(f"{WORDS[i % len(WORDS)]}{i % 997}" for i in range(250_000))  # about 2 MB


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.fixture(scope="module", params=["onnx", "torch"])
def encoder(request: pytest.FixtureRequest, test_home: Path) -> EmbeddingModel:
    state = EngineRegistry.discover().state(request.param)
    assert state is not None
    assert state.engine is not None
    model = state.engine.load(MINILM.model_copy(update={"context_length": 2048}), "cpu", test_home)
    assert isinstance(model, EmbeddingModel)
    return model


def test_the_window_is_the_models_own_and_a_cut_matches_sentence_transformers(encoder: EmbeddingModel) -> None:
    from sentence_transformers import SentenceTransformer

    assert encoder.context_length == 256, "sentence_bert_config.json's max_seq_length, below the configured 2048"
    reference = SentenceTransformer(str(resolve_source(MINILM.source).path), device="cpu")
    texts = [LONG[:30_000], "a short one"]
    want = reference.encode(texts)
    got = encoder.embed([LONG, "a short one"])
    assert [cosine(a, b) for a, b in zip(got.vectors, want, strict=True)] > [0.9999, 0.9999]
    assert got.prompt_tokens == 256 + len(reference.tokenizer("a short one")["input_ids"])


def test_told_not_to_cut_an_engine_refuses_the_input_by_its_place(encoder: EmbeddingModel) -> None:
    with pytest.raises(InputTooLong) as refused:
        encoder.embed(["fine", LONG], truncate=False)
    assert (refused.value.index, refused.value.length, refused.value.limit) == (1, None, 256)
    with pytest.raises(InputTooLong) as counted:
        encoder.embed([LONG[:2000]], truncate=False)  # short enough to count whole
    assert counted.value.length is not None
    assert counted.value.length > 256


def test_llamacpp_cuts_to_its_window_keeping_its_special_tokens() -> None:
    """A GGUF embedding model's own class over a real Llama (SmolLM2, mean-pooled: the engine's load leaves the
    pooling to the GGUF, and this one names none)."""
    import llama_cpp

    from inferrelay.engines.llamacpp import LlamaEmbeddingModel

    spec = SMOLLM2.model_copy(update={"capabilities": [Capability.EMBEDDINGS], "context_length": 64})
    llm = llama_cpp.Llama(
        model_path=str(resolve_source(spec.source).path),
        n_ctx=64,
        n_batch=64,
        n_ubatch=64,
        embedding=True,
        pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
        verbose=False,
    )
    model = LlamaEmbeddingModel(llm, spec)
    out = model.embed([LONG, LONG[:1000], "hello"])
    assert cosine(out.vectors[0], out.vectors[1]) > 0.9999, "the first window alone decides the vector"
    assert cosine(out.vectors[0], out.vectors[2]) < 0.99
    with pytest.raises(InputTooLong) as refused:
        model.embed([LONG], truncate=False)
    assert refused.value.limit == 64
    model.close()
