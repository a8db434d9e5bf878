"""vLLM and DeepSpeed on a machine without a GPU: a clear status, never a crash, and the chain falls through."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from inferrelay.config.embedded import SMOLLM2
from inferrelay.config.loading import load_settings
from inferrelay.engines.cuda import cuda_missing
from inferrelay.engines.registry import EngineRegistry
from inferrelay.server.app import create_app
from tests.conftest import FRANCE

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: tests/gpu covers it")


def test_both_engines_say_why_they_cannot_run_here() -> None:
    registry = EngineRegistry.discover()
    for name, install in (
        ("vllm", "pip install 'inferrelay[vllm]'"),
        ("deepspeed", "pip install 'inferrelay[deepspeed]'"),
    ):
        state = registry.state(name)
        assert state is not None
        assert state.engine is not None, "the plugin itself imports without its library"
        assert not state.probe.available
        assert install in state.probe.reason
    no_cuda = cuda_missing("vllm")
    assert no_cuda is not None
    assert no_cuda.reason == f"vllm needs a CUDA GPU: torch {torch.__version__} (a CPU-only build) sees none"


def test_a_chain_that_starts_with_them_falls_through_to_llama_cpp(tmp_path: Path, test_home: Path) -> None:
    config = tmp_path / "config"
    config.mkdir()
    (config / "model-mappings.yaml").write_text(
        f"models:\n  {SMOLLM2.name}: {{engines: [vllm, deepspeed, llamacpp]}}\n"
    )
    with TestClient(create_app(load_settings(config, test_home))) as client:
        body = {"model": SMOLLM2.name, "messages": FRANCE, "max_tokens": 8, "temperature": 0}
        response = client.post("/v1/chat/completions", json=body)
        vllm = client.get("/api/v1/engines/vllm").json()
    assert response.status_code == 200, response.text
    assert response.headers["x-inferrelay-backend"] == "local/llamacpp"
    assert (
        response.headers["x-inferrelay-attempts"] == "local/vllm=dependency_missing,local/deepspeed=dependency_missing"
    )
    remedies = response.headers["x-inferrelay-remediation"]
    assert "local/vllm:skip_engine(dependency_missing; fix: pip install 'inferrelay[vllm]')" in remedies
    assert vllm["available"] is False
    assert "pip install 'inferrelay[vllm]'" in vllm["error"]
