"""A real CUDA out-of-memory from an oversized batch, climbing the ladder in a real server on a GPU.

The server's process is capped (torch's per-process memory fraction) at a
size measured here first: the weights, plus a known multiple of what one
input or a batch takes. So the batch runs out of memory for real, inside
the CUDA allocator, and each test knows which rung must make it fit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from inferrelay.config.embedded import MINILM
from inferrelay.engines.torch import TorchEngine

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")

TEXTS = [" ".join(["word"] * 200) + f" {i}" for i in range(512)]


def reserved_after(dtype: str, home: Path, batches: tuple[int, ...]) -> list[int]:
    """CUDA memory reserved by this process once MiniLM is loaded in `dtype`, then at the peak of each batch size."""
    torch.cuda.empty_cache()
    base = torch.cuda.memory_reserved()
    model = TorchEngine().load(MINILM.model_copy(update={"dtype": dtype}), "cuda", home)
    sizes = [torch.cuda.memory_reserved() - base]
    for n in batches:
        torch.cuda.reset_peak_memory_stats()
        model.embed(TEXTS[:n])
        sizes.append(torch.cuda.max_memory_reserved() - base)
    model.close()
    return sizes


def start_capped(start_server: Any, home: Path, dtype: str, cap: int) -> Any:
    config = home / "config"
    config.mkdir(exist_ok=True)
    (config / "model-mappings.yaml").write_text(  # in the server's process: the cap is that process's
        "runtime:\n  engine_isolation: in_process\n"
        f"models:\n  {MINILM.name}: {{engines: [torch], device: cuda, dtype: {dtype}}}\n"
    )
    total = torch.cuda.get_device_properties(0).total_memory
    prelude = f"import torch; torch.cuda.set_per_process_memory_fraction({cap / total!r})"
    return start_server(home, "--config", str(config), prelude=prelude)


def embed(server: Any, texts: list[str]) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/embeddings", json={"model": MINILM.name, "input": texts}, timeout=600)


def matches_the_cpu(response: httpx.Response, home: Path, n: int) -> float:
    got = np.array([row["embedding"] for row in response.json()["data"]], dtype=np.float32)
    want = TorchEngine().load(MINILM.model_copy(update={"dtype": "float32"}), "cpu", home).embed(TEXTS[:n]).vectors
    return float((np.sum(got * want, axis=1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)).min())


def test_an_oversized_batch_is_halved_until_it_fits(start_server: Any, tmp_path: Path, test_home: Path) -> None:
    weights, peak32 = reserved_after("bfloat16", test_home, (32,))
    cap = weights + int(0.75 * (peak32 - weights))  # the server's batches of 32 do not fit; 16 do
    print(f"\nweights {weights / 2**20:.0f} MiB, 32 inputs {peak32 / 2**20:.0f} MiB, cap {cap / 2**20:.0f} MiB")
    server = start_capped(start_server, tmp_path, "bfloat16", cap)
    response = embed(server, TEXTS)
    assert response.status_code == 200, response.text
    steps = response.headers["x-inferrelay-remediation"].split(";")
    print("x-inferrelay-remediation:", steps)
    assert steps[0] == "local/torch:smaller_batch(32 -> 16)"
    assert all(step.startswith("local/torch:smaller_batch(") for step in steps)
    assert response.headers["x-inferrelay-backend"] == "local/torch"
    assert matches_the_cpu(response, test_home, 512) > 0.99


def test_a_model_too_big_in_float32_is_loaded_in_bfloat16(start_server: Any, tmp_path: Path, test_home: Path) -> None:
    (weights,) = reserved_after("float32", test_home, ())
    cap = int(0.75 * weights)  # the float32 weights do not fit; bfloat16 (half) does, with room for a batch
    print(f"\nfloat32 weights {weights / 2**20:.0f} MiB, cap {cap / 2**20:.0f} MiB")
    server = start_capped(start_server, tmp_path, "float32", cap)
    response = embed(server, TEXTS[:8])
    assert response.status_code == 200, response.text
    steps = response.headers["x-inferrelay-remediation"].split(";")
    print("x-inferrelay-remediation:", steps)
    assert steps == ["local/torch:lower_precision(float32 -> bfloat16, to load)"]
    view = httpx.get(f"{server.url}/api/v1/runtime/models/{MINILM.name}", timeout=30).json()
    assert [(slot["device"], slot["dtype"]) for slot in view["loaded"]] == [("cuda", "bfloat16")]
    assert matches_the_cpu(response, test_home, 8) > 0.99


def test_one_input_too_big_in_bfloat16_fails_alone_and_the_model_stays_on_the_gpu(
    start_server: Any, tmp_path: Path, test_home: Path
) -> None:
    """A batch of one that still runs out of memory is that request's failure: the model is not moved to the CPU
    for the callers after it (runtime/remediation.py); a batch that fits is answered on the GPU right after."""
    weights, one = reserved_after("bfloat16", test_home, (1,))
    assert one > weights, "one input needed no new CUDA memory: the cap cannot be placed between them"
    cap = weights + (one - weights) // 2
    server = start_capped(start_server, tmp_path, "bfloat16", cap)
    response = embed(server, TEXTS[:4])
    assert response.status_code == 503, response.text
    assert response.headers["x-inferrelay-attempts"] == "local/torch=out_of_memory"
    steps = response.headers["x-inferrelay-remediation"].split(";")
    print("\nx-inferrelay-remediation:", steps)
    assert all(s.startswith("local/torch:smaller_batch(") for s in steps[:-1])
    assert steps[-1] == "local/torch:next_engine(after out_of_memory)"
    view = httpx.get(f"{server.url}/api/v1/runtime/models/{MINILM.name}", timeout=30).json()
    assert [(slot["device"], slot["dtype"], slot["remedied"]) for slot in view["loaded"]] == [
        ("cuda", "bfloat16", False)
    ]
    short = embed(server, ["hello"])  # a few tokens fit where ~200 did not
    assert short.status_code == 200, short.text
    assert "x-inferrelay-remediation" not in short.headers
