"""The onnx decoder runs concurrent requests side by side (one genai generator each, on one model): each gets
the answer it gets alone."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from inferrelay.config.embedded import SMOLLM2
from inferrelay.engines.base import GenerationRequest, Sampling, TokenTextModel
from inferrelay.engines.registry import EngineRegistry

pytestmark = pytest.mark.slow


def test_concurrent_greedy_and_seeded_requests_get_their_alone_answers(test_home: Path) -> None:
    state = EngineRegistry.discover().state("onnx")
    assert state is not None
    assert state.engine is not None, state.probe.reason
    model = state.engine.load(SMOLLM2, "cpu", test_home)
    assert isinstance(model, TokenTextModel)
    assert model.parallel > 1, "the slot may send it several requests at once"
    requests = [
        GenerationRequest(messages=[{"role": "user", "content": f"Tell me about {w}."}], max_tokens=24, sampling=s)
        for w, s in [("rivers", Sampling(0.0)), ("bees", Sampling(0.0)), ("owls", Sampling(0.8, seed=3))]
    ]
    alone = [model.generate(r) for r in requests]
    with ThreadPoolExecutor(len(requests)) as pool:
        together = list(pool.map(model.generate, requests))
    assert [p.text for p in together] == [p.text for p in alone]
    assert [p.completion_tokens for p in together] == [p.completion_tokens for p in alone]
