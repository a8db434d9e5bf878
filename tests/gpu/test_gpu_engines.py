"""On a CUDA machine with the extras installed: chat, streaming and embeddings through vllm, deepspeed, torch and
onnx on CUDA, with the real embedded models. Skipped everywhere else (CI has no GPU); docs/gpu.md says how to run it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from inferrelay.config.embedded import MINILM, SMOLLM2
from inferrelay.engines.base import EmbeddingModel, GenerationRequest, Sampling, TextModel
from inferrelay.engines.registry import EngineRegistry
from tests.conftest import FRANCE

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")

GREEDY = GenerationRequest(messages=FRANCE, max_tokens=16, sampling=Sampling(temperature=0.0))


def engine(name: str) -> object:
    state = EngineRegistry.discover().state(name)
    if state is None or state.engine is None or not state.probe.available:
        pytest.skip(f"{name}: {state.probe.reason if state else 'not installed'}")
    return state.engine


@pytest.mark.parametrize("name", ["vllm", "deepspeed", "torch", "onnx"])
def test_chat_on_cuda(name: str, test_home: Path) -> None:
    model = engine(name).load(SMOLLM2, "cuda", test_home)  # type: ignore[attr-defined]
    assert isinstance(model, TextModel)
    answer = model.generate(GREEDY)
    assert "Paris" in answer.text
    assert answer.completion_tokens > 0
    pieces = list(model.stream(GREEDY))
    assert "".join(p.text for p in pieces) == answer.text
    model.close()


@pytest.mark.parametrize("name", ["vllm", "torch", "onnx"])
def test_embeddings_on_cuda_match_the_cpu(name: str, test_home: Path) -> None:
    model = engine(name).load(MINILM, "cuda", test_home)  # type: ignore[attr-defined]
    reference = engine("onnx").load(MINILM, "cpu", test_home)  # type: ignore[attr-defined]
    assert isinstance(model, EmbeddingModel)
    assert isinstance(reference, EmbeddingModel)
    texts = ["The cat sat on the mat.", "A dog ran in the park.", "Quantum chromodynamics."]
    got, want = model.embed(texts).vectors, reference.embed(texts).vectors
    assert np.sum(got * want, axis=1).min() > 0.99


def test_a_real_cuda_out_of_memory_is_classified_for_the_ladder() -> None:
    from inferrelay.errors import ErrorKind, classify

    free, _ = torch.cuda.mem_get_info()
    with pytest.raises(torch.OutOfMemoryError) as raised:
        torch.empty(free * 2, dtype=torch.uint8, device="cuda")
    assert classify(raised.value).kind is ErrorKind.OUT_OF_MEMORY
