"""On a CUDA machine: the torch decoder's padded batches against each request alone, in float32 and in the GPU's
default bfloat16. Skipped everywhere else (CI has no GPU); docs/gpu.md has what it printed."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from inferrelay.config.embedded import SMOLLM2
from inferrelay.engines.base import GenerationRequest, Sampling, TokenTextModel
from inferrelay.engines.torch import TorchEngine

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")

WORDS = ["dragon", "lighthouse", "river", "robot", "garden", "winter", "market", "violin"]
REQUESTS = [
    GenerationRequest(
        messages=[{"role": "user", "content": f"Write a story about a {w}."}], max_tokens=48, sampling=Sampling(0.0)
    )
    for w in WORDS
]


def answers(model: TokenTextModel, together: bool) -> list[list[int]]:
    def ids(request: GenerationRequest) -> list[int]:
        return list(model.generate_ids(model.encode(request), 48, request.sampling))

    if not together:
        return [ids(r) for r in REQUESTS]
    with ThreadPoolExecutor(len(REQUESTS)) as pool:
        return list(pool.map(ids, REQUESTS))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_padded_batches_on_cuda_against_each_alone(dtype: str, test_home: Path) -> None:
    spec = SMOLLM2.model_copy(update={"dtype": dtype, "engine_options": {"torch": {"parallel": 8}}})
    model = TorchEngine().load(spec, "cuda", test_home)
    assert isinstance(model, TokenTextModel)
    alone, together = answers(model, False), answers(model, True)
    same = sum(a == b for a, b in zip(alone, together, strict=True))
    sizes = model._batcher.batch_sizes  # type: ignore[attr-defined]
    print(f"\ntorch cuda {dtype}: {same}/{len(REQUESTS)} batched answers equal alone; batch sizes {sizes}")
    assert max(sizes) > 1
    if dtype == "float32":
        assert same == len(REQUESTS), "float32 greedy answers are the same batched or alone"
    model.close()
