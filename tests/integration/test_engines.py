"""Each real engine serves the embedded model it can, on its own (no fallback involved)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from inferrelay.config.embedded import MINILM, SMOLLM2
from inferrelay.config.sources import resolve_source
from inferrelay.engines.base import EmbeddingModel, GenerationRequest, LoadedModel, Sampling, TokenTextModel
from inferrelay.engines.onnx_export import ENCODER_VERSION
from inferrelay.engines.registry import EngineRegistry
from inferrelay.routing.batching import embed_sorted
from tests.conftest import FRANCE
from tests.references import Answer, llama_cpp_chat, onnx_genai_chat, transformers_chat

pytestmark = pytest.mark.slow

SENTENCES = [
    "The cat sits on the mat.",
    "A quick brown fox jumps over the lazy dog.",
    "Paris is the capital of France.",
    "Embeddings map text to vectors.",
    "It rained all day in Lisbon, and the trams were late.",
    "x",
]


@pytest.fixture(scope="module")
def registry() -> EngineRegistry:
    return EngineRegistry.discover()


def load(registry: EngineRegistry, engine: str, spec: object, home: Path) -> LoadedModel:
    state = registry.state(engine)
    assert state is not None, f"engine {engine} is not registered"
    assert state.probe.available, state.probe.reason
    assert state.engine is not None
    return state.engine.load(spec, "auto", home)  # type: ignore[arg-type]


@pytest.fixture(scope="module", params=["llamacpp", "onnx", "torch"])
def decoder(request: pytest.FixtureRequest, registry: EngineRegistry, test_home: Path) -> TokenTextModel:
    model = load(registry, request.param, SMOLLM2, test_home)
    assert isinstance(model, TokenTextModel)
    return model


@pytest.fixture(scope="module")
def encoders(registry: EngineRegistry, test_home: Path) -> dict[str, EmbeddingModel]:
    loaded = {name: load(registry, name, MINILM, test_home) for name in ("onnx", "torch")}
    assert all(isinstance(m, EmbeddingModel) for m in loaded.values())
    return loaded  # type: ignore[return-value]


def library_answer(engine: str, home: Path) -> Answer:
    """The engine's library answering on its own, on this build: the tiny model's wording is the build's."""
    if engine == "llamacpp":
        return llama_cpp_chat(FRANCE, 40)
    if engine == "torch":
        return transformers_chat(FRANCE, 40)
    return onnx_genai_chat(home, FRANCE, 40)


def test_greedy_answer_is_the_librarys_own(decoder: TokenTextModel, test_home: Path) -> None:
    answer = decoder.generate(GenerationRequest(messages=FRANCE, max_tokens=40, sampling=Sampling(0.0)))
    expected = library_answer(decoder.engine_name, test_home)
    got = Answer(answer.text, answer.finish_reason or "", answer.prompt_tokens, answer.completion_tokens)
    assert got == expected, decoder.engine_name
    assert answer.text.strip()
    assert answer.prompt_tokens > 10
    assert 0 < answer.completion_tokens <= 40


def test_completion_honours_stop_and_max_tokens(decoder: TokenTextModel) -> None:
    request = GenerationRequest(prompt="The capital of France is", max_tokens=12, stop=("\n",), sampling=Sampling(0.0))
    answer = decoder.generate(request)
    assert "\n" not in answer.text
    assert answer.completion_tokens <= 12
    cut = decoder.generate(GenerationRequest(prompt="Once upon a time", max_tokens=3, sampling=Sampling(0.0)))
    assert cut.finish_reason == "length"
    assert cut.completion_tokens == 3


def test_stream_pieces_add_up_to_the_whole_answer(decoder: TokenTextModel) -> None:
    request = GenerationRequest(messages=FRANCE, max_tokens=30, sampling=Sampling(0.0))
    pieces = list(decoder.stream(request))
    assert len(pieces) > 2, "a stream arrives in several pieces"
    assert "".join(p.text for p in pieces) == decoder.generate(request).text
    assert pieces[-1].finish_reason in ("stop", "length")


def test_seed_makes_sampling_repeatable(decoder: TokenTextModel) -> None:
    request = GenerationRequest(prompt="My favourite animal is", max_tokens=12, sampling=Sampling(1.0, 0.95, seed=7))
    assert decoder.generate(request).text == decoder.generate(request).text


def test_without_a_seed_samples_differ(decoder: TokenTextModel) -> None:
    request = GenerationRequest(prompt="My favourite animal is", max_tokens=16, sampling=Sampling(1.5, 1.0))
    answers = {decoder.generate(request).text for _ in range(3)}
    assert len(answers) > 1, "three unseeded samples at temperature 1.5 were identical"


def test_chat_template_comes_from_the_model(decoder: TokenTextModel) -> None:
    ids = decoder.encode(GenerationRequest(messages=FRANCE))
    prompt = decoder.detokenize(ids)
    assert "What is the capital of France?" in prompt
    plain = decoder.encode(GenerationRequest(prompt="What is the capital of France?"))
    assert len(ids) > len(plain) + 5, "the template adds role markers around the messages"


def test_onnx_and_torch_embeddings_agree_with_sentence_transformers(encoders: dict[str, EmbeddingModel]) -> None:
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(resolve_source(MINILM.source).path), device="cpu").encode(
        SENTENCES, normalize_embeddings=True
    )
    onnx = embed_sorted(encoders["onnx"], SENTENCES, batch_size=4).vectors
    torch = embed_sorted(encoders["torch"], SENTENCES, batch_size=4).vectors
    assert onnx.shape == torch.shape == (len(SENTENCES), 384)
    assert onnx.dtype == np.float32
    for name, vectors in (("onnx", onnx), ("torch", torch)):
        cosine = np.sum(vectors * reference, axis=1)
        assert cosine.min() > 0.999, f"{name} vs sentence-transformers: {cosine}"
    assert np.sum(onnx * torch, axis=1).min() > 0.999
    assert np.allclose(np.linalg.norm(onnx, axis=1), 1.0, atol=1e-5)
    # Different sentences really differ: the check above is not satisfied by constant vectors.
    assert float(onnx[0] @ onnx[2]) < 0.9


def test_onnx_export_is_cached_by_source_hash(encoders: dict[str, EmbeddingModel], test_home: Path) -> None:
    digest = resolve_source(MINILM.source).digest()
    folder = test_home / "cache" / f"onnx-encoder-{ENCODER_VERSION}-fp32-{digest}"
    assert (folder / "model.onnx").is_file()
    stamp = os.stat(folder / "model.onnx").st_mtime_ns
    registry = EngineRegistry.discover()
    load(registry, "onnx", MINILM, test_home)
    assert os.stat(folder / "model.onnx").st_mtime_ns == stamp, "a second load reuses the export"
    leftovers = [p.name for p in (test_home / "cache").iterdir() if p.name.startswith(".") and p.is_dir()]
    assert leftovers == [], "no half-built temporary folders stay behind"


def test_llamacpp_refuses_a_truncated_gguf(registry: EngineRegistry, tmp_path: Path) -> None:
    from inferrelay.errors import ErrorKind, InferrelayError

    source = resolve_source(SMOLLM2.source).path
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(source.read_bytes()[: 4 << 20])
    spec = SMOLLM2.model_copy(update={"source": str(broken)})
    with pytest.raises(InferrelayError) as caught:
        load(registry, "llamacpp", spec, tmp_path)
    assert caught.value.kind is ErrorKind.MODEL_LOAD_FAILED
    assert "broken.gguf" in caught.value.message
