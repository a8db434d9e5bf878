"""On a CUDA machine: chat, streaming and embeddings through vllm, deepspeed, torch and onnx on CUDA, with the real
embedded models, compared with the CPU engines. Skipped everywhere else (CI has no GPU); docs/gpu.md says how to run
it and what it printed on the GPU it last ran on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inferrelay.config.embedded import MINILM, SMOLLM2
from inferrelay.engines.base import EmbeddingModel, GenerationRequest, Sampling, TextModel
from inferrelay.engines.registry import EngineRegistry
from tests.conftest import FRANCE

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")

GREEDY = GenerationRequest(messages=FRANCE, max_tokens=24, sampling=Sampling(temperature=0.0))
TEXTS = ["The cat sat on the mat.", "A dog ran in the park.", "Quantum chromodynamics.", "Ünïcödé and emoji 🙂."]


def engine(name: str, on_cuda: bool = True) -> Any:
    state = EngineRegistry.discover().state(name)
    if state is None or state.engine is None or not state.probe.available:
        pytest.skip(f"{name}: {state.probe.reason if state else 'not installed'}")
    if name == "onnx" and on_cuda:
        import onnxruntime

        if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
            version = onnxruntime.__version__
            pytest.skip(f"onnxruntime {version} has no CUDAExecutionProvider: pip install onnxruntime-gpu")
    return state.engine


def cosines(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    return np.sum(got * want, axis=1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)


@pytest.mark.parametrize("name", ["vllm", "deepspeed", "torch", "onnx"])
def test_chat_on_cuda_streams_token_by_token(name: str, test_home: Path) -> None:
    model = engine(name).load(SMOLLM2, "cuda", test_home)
    assert isinstance(model, TextModel)
    answer = model.generate(GREEDY)
    print(f"\n{name} on cuda: {answer.text!r} ({answer.completion_tokens} tokens, {answer.finish_reason})")
    assert answer.text.strip()
    assert answer.completion_tokens > 0
    assert model.generate(GREEDY).text == answer.text  # greedy is deterministic
    pieces = list(model.stream(GREEDY))
    assert "".join(p.text for p in pieces) == answer.text
    assert len([p for p in pieces if p.text]) > 3, "a stream must arrive in pieces, not as one answer"
    assert pieces[-1].completion_tokens == answer.completion_tokens
    model.close()


def test_torch_on_cuda_in_float32_answers_as_torch_on_the_cpu(test_home: Path) -> None:
    """The same library and precision on two devices: the greedy answer must be the same text."""
    fp32 = SMOLLM2.model_copy(update={"dtype": "float32"})
    on_cuda = engine("torch").load(fp32, "cuda", test_home)
    on_cpu = engine("torch").load(fp32, "cpu", test_home)
    cuda_text, cpu_text = on_cuda.generate(GREEDY).text, on_cpu.generate(GREEDY).text
    print(f"\ntorch float32: cuda {cuda_text!r} / cpu {cpu_text!r}")
    assert cuda_text == cpu_text
    on_cuda.close()


@pytest.mark.parametrize("name", ["vllm", "torch", "onnx"])
def test_embeddings_on_cuda_match_the_cpu(name: str, test_home: Path) -> None:
    model = engine(name).load(MINILM, "cuda", test_home)
    reference = engine("torch").load(MINILM.model_copy(update={"dtype": "float32"}), "cpu", test_home)
    assert isinstance(model, EmbeddingModel)
    assert isinstance(reference, EmbeddingModel)
    similarity = cosines(model.embed(TEXTS).vectors, reference.embed(TEXTS).vectors)
    print(f"\n{name} on cuda vs torch float32 on the cpu: cosine min {similarity.min():.6f}")
    assert similarity.min() > 0.99  # bf16 on CUDA against fp32
    model.close()


def test_torch_embeddings_in_float32_on_cuda_equal_the_cpu(test_home: Path) -> None:
    fp32 = MINILM.model_copy(update={"dtype": "float32"})
    got = engine("torch").load(fp32, "cuda", test_home).embed(TEXTS).vectors
    want = engine("torch").load(fp32, "cpu", test_home).embed(TEXTS).vectors
    similarity = cosines(got, want)
    print(f"\ntorch float32 cuda vs cpu: cosine min {similarity.min():.8f}")
    assert similarity.min() > 0.9999


def test_a_real_cuda_out_of_memory_is_classified_for_the_ladder() -> None:
    from inferrelay.errors import ErrorKind, classify

    free, _ = torch.cuda.mem_get_info()
    with pytest.raises(torch.OutOfMemoryError) as raised:
        torch.empty(free * 2, dtype=torch.uint8, device="cuda")
    assert classify(raised.value).kind is ErrorKind.OUT_OF_MEMORY
