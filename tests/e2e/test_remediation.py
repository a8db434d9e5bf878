"""The remediation ladder for real: a memory budget that real requests exceed, and a library hidden from the server.

The budget leaves the model a known room for its working memory (the
runtime charges the estimate, which is above what MiniLM measures), so each
test knows which step must make the request fit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from inferrelay.config.embedded import MINILM, SMOLLM2
from inferrelay.config.sources import resolve_source
from inferrelay.runtime.placement import estimate_for
from tests.e2e.test_runtime import api, chat

pytestmark = pytest.mark.slow

MIB = 2**20
TEXTS = [" ".join(["word"] * 140) + f" {i}" for i in range(32)]  # about 235 tokens each, by the runtime's guess


def start_with_budget(start_server: Any, home: Path, budget: int, models: str = "") -> Any:
    config = home / "config"
    config.mkdir(exist_ok=True)
    (config / "model-mappings.yaml").write_text(f"runtime:\n  memory_budget: {{cpu: {budget}}}\n{models}")
    return start_server(home, "--config", str(config))


def embed(server: Any, texts: list[str]) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/embeddings", json={"model": MINILM.name, "input": texts}, timeout=300)


def cosines_to_sentence_transformers(response: httpx.Response) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    vectors = np.array([row["embedding"] for row in response.json()["data"]], dtype=np.float32)
    reference = SentenceTransformer(str(resolve_source(MINILM.source).path), device="cpu").encode(TEXTS)
    return np.sum(vectors * reference, axis=1) / np.linalg.norm(vectors, axis=1) / np.linalg.norm(reference, axis=1)


def fp32_estimate() -> int:
    estimate = estimate_for(MINILM, "onnx", "float32")
    assert estimate is not None
    return estimate.total


def test_a_batch_too_big_for_the_budget_is_split_until_it_fits(start_server: Any, tmp_path: Path) -> None:
    server = start_with_budget(start_server, tmp_path, fp32_estimate() + 60 * MIB)  # 8 texts fit, 16 do not
    response = embed(server, TEXTS)
    assert response.status_code == 200, response.text
    assert response.headers["x-inferrelay-remediation"] == (
        "local/onnx:smaller_batch(32 -> 16);local/onnx:smaller_batch(16 -> 8)"
    )
    assert cosines_to_sentence_transformers(response).min() > 0.9999
    stats = api(server, "GET", "/stats").json()
    assert stats["remediation"][MINILM.name] == {"smaller_batch": 2}


def test_when_one_input_does_not_fit_the_request_fails_alone_and_the_model_stays_in_fp32(
    start_server: Any, tmp_path: Path
) -> None:
    """A batch of one that still runs out of memory is the request's failure, not a reason to reload the model
    in a lower precision for every caller after it (runtime/remediation.py)."""
    only_onnx = f"models:\n  {MINILM.name}: {{engines: [onnx]}}\n"
    server = start_with_budget(start_server, tmp_path, fp32_estimate() + 2 * MIB, only_onnx)  # not one text
    response = embed(server, TEXTS)
    assert response.status_code == 503
    assert response.headers["x-inferrelay-attempts"] == "local/onnx=out_of_memory"
    assert response.headers["x-inferrelay-remediation"].split(";") == [
        *(f"local/onnx:smaller_batch({n} -> {n // 2})" for n in (32, 16, 8, 4, 2)),
        "local/onnx:next_engine(after out_of_memory)",
    ]
    assert "a batch of 1 inputs needs about" in response.json()["error"]["message"]
    view = api(server, "GET", f"/models/{MINILM.name}").json()
    assert [(slot["dtype"], slot["remedied"]) for slot in view["loaded"]] == [("float32", False)]
    assert not {e["what"] for e in view["events"]} & {"lower_precision", "moved_to_cpu"}
    stats = api(server, "GET", "/stats").json()
    assert stats["remediation"][MINILM.name] == {"next_engine": 1, "smaller_batch": 5}


def test_a_ladder_that_runs_out_ends_in_a_503_listing_every_step(start_server: Any, tmp_path: Path) -> None:
    int8 = estimate_for(MINILM, "onnx", "int8")
    assert int8 is not None
    server = start_with_budget(start_server, tmp_path, int8.total - MIB)  # no engine, no precision fits
    response = embed(server, ["hello"])
    assert response.status_code == 503
    assert response.headers["x-inferrelay-attempts"] == "local/onnx=out_of_memory,local/torch=out_of_memory"
    assert response.headers["x-inferrelay-remediation"].split(";") == [
        "local/onnx:lower_precision(float32 -> int8, to load)",
        "local/onnx:next_engine(after out_of_memory)",
        "local/torch:lower_precision(float32 -> bfloat16, to load)",
        "local/torch:next_engine(after out_of_memory)",
    ]
    message = response.json()["error"]["message"]
    assert "local/onnx: out_of_memory" in message
    assert "hint: Unload or unpin a model, raise runtime.memory_budget" in message


def test_a_missing_library_is_skipped_with_the_install_that_fixes_it(start_server: Any, tmp_path: Path) -> None:
    server = start_server(tmp_path, block_modules=("llama_cpp",))
    response = chat(server, SMOLLM2.name)
    assert response.status_code == 200, response.text
    assert response.headers["x-inferrelay-backend"] == "local/onnx"
    remedy = response.headers["x-inferrelay-remediation"]
    assert remedy.startswith("local/llamacpp:skip_engine(dependency_missing; fix: pip install 'inferrelay[llamacpp]'")
