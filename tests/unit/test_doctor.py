"""`inferrelay doctor` on real files the tests make: each kind of damage reported precisely, with its fix."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from inferrelay.config.embedded import MINILM, SMOLLM2
from inferrelay.config.sources import resolve_source
from inferrelay.doctor.inspect import inspect_model
from inferrelay.doctor.render import render
from inferrelay.doctor.report import diagnose
from inferrelay.engines.registry import EngineRegistry

GGUF = resolve_source(SMOLLM2.source).path


@pytest.fixture(scope="module")
def engines() -> EngineRegistry:
    return EngineRegistry.discover()


def _tiny_llama(folder: Path, shard_size: str = "100KB") -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256,
    )  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(folder, max_shard_size=shard_size)
    (folder / "tokenizer.json").write_text("{}")
    return folder


def test_the_packaged_gguf_is_usable_with_its_header_facts(engines: EngineRegistry) -> None:
    report = diagnose(GGUF, engines, [SMOLLM2, MINILM])
    found = report.inspection
    assert found.format == "gguf"
    assert found.architecture == "llama"
    assert found.details["quantisation"] == "Q4_1"
    assert found.details["context length"] == 8192
    assert found.details["tensors"] == 272
    assert found.problems == []
    assert report.usable
    llamacpp = next(e for e in report.engines if e.engine == "llamacpp")
    assert llamacpp.can_serve
    assert {m.device for m in report.memory} >= {"cpu"}
    assert all(m.needed > found.facts.weight_bytes for m in report.memory)  # type: ignore[union-attr]
    assert [a.name for a in report.alternatives] == []  # the only other model embeds; this one chats
    assert "usable: yes" in render(report)


def test_a_gguf_cut_in_the_middle_says_how_many_bytes_are_missing(tmp_path: Path, engines: EngineRegistry) -> None:
    cut = tmp_path / "cut.gguf"
    data = GGUF.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    report = diagnose(cut, engines, [SMOLLM2, MINILM])
    (problem,) = report.inspection.problems
    assert f"truncated: expected {len(data)} bytes, the file has {len(data) // 2}" in problem.what
    assert "download or copy the file again" in problem.fix
    assert not report.usable
    assert report.alternatives[0].name == SMOLLM2.name  # a working model that does the same job


def test_a_gguf_with_a_bad_magic_and_a_git_lfs_pointer(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUX" + GGUF.read_bytes()[4:4096])
    (problem,) = inspect_model(bad).problems
    assert "has no GGUF magic: it starts with b'GGUX" in problem.what
    pointer = tmp_path / "pointer.gguf"
    pointer.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n")
    (problem,) = inspect_model(pointer).problems
    assert "is a Git LFS pointer" in problem.what
    assert problem.fix.startswith("fetch the real file: git lfs pull")


def test_a_transformers_folder_missing_a_weight_shard(tmp_path: Path, engines: EngineRegistry) -> None:
    folder = _tiny_llama(tmp_path / "tiny")
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) >= 2
    (folder / shards[1]).unlink()
    report = diagnose(folder, engines, [])
    found = report.inspection
    assert found.format == "hf_folder"
    assert found.architecture == "LlamaForCausalLM"
    assert [p.what for p in found.problems] == [
        f"weight shard {shards[1]} (named by model.safetensors.index.json) is missing"
    ]
    assert f"{len(shards) - 1} of {len(shards)} are here" in found.problems[0].fix
    assert not report.usable


def test_a_whole_transformers_folder_is_usable_and_counts_its_parameters(
    tmp_path: Path, engines: EngineRegistry
) -> None:
    from transformers import LlamaForCausalLM

    folder = _tiny_llama(tmp_path / "tiny", shard_size="10GB")
    report = diagnose(folder, engines, [])
    assert report.inspection.problems == []
    expected = sum(p.numel() for p in LlamaForCausalLM.from_pretrained(folder).parameters())
    assert report.inspection.details["parameters"] == expected
    assert {e.engine for e in report.engines if e.can_serve} >= {"torch", "onnx"}
    assert next(e for e in report.engines if e.engine == "llamacpp").reason.startswith("reads gguf; this is hf_folder")


def test_a_config_that_does_not_parse_and_an_unknown_architecture(tmp_path: Path) -> None:
    folder = _tiny_llama(tmp_path / "tiny", shard_size="10GB")
    config = folder / "config.json"
    good = config.read_text()
    config.write_text(good[: len(good) // 2])
    (problem,) = inspect_model(folder).problems
    assert problem.what.startswith(f"{config} does not parse as JSON: line ")
    assert "restore config.json" in problem.fix

    raw = json.loads(good) | {"model_type": "quantum-llama", "architectures": ["QuantumLlamaForCausalLM"]}
    config.write_text(json.dumps(raw))
    found = inspect_model(folder)
    assert [p.what.split(" is not known")[0] for p in found.problems] == ["model type 'quantum-llama'"]
    assert "upgrade transformers" in found.problems[0].fix


def test_a_diffusers_pipeline_with_one_components_weights_deleted(tmp_path: Path, engines: EngineRegistry) -> None:
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    unet = UNet2DModel(
        sample_size=8, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4,
    )  # fmt: skip
    folder = tmp_path / "pipeline"
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler()).save_pretrained(folder)
    whole = diagnose(folder, engines, [])
    assert whole.inspection.format == "diffusers"
    assert [(c.name, c.usable) for c in whole.inspection.components] == [("scheduler", True), ("unet", True)]
    assert whole.inspection.problems[-1].what == "no engine here can serve it"

    for weights in (folder / "unet").glob("*.safetensors"):
        weights.unlink()
    found = diagnose(folder, engines, []).inspection
    unet_state = next(c for c in found.components if c.name == "unet")
    assert (unet_state.present, unet_state.config_ok, unet_state.weights_ok) == (True, True, False)
    assert found.problems[0].what == "component unet (diffusers.UNet2DModel): no weight files (*.safetensors, *.bin)"
    assert found.problems[0].fix.endswith("usable alone: scheduler")
    assert found.details["components"] == "1 of 2 usable"

    shutil.rmtree(folder / "scheduler")
    found = inspect_model(folder)
    assert "component scheduler (diffusers.DDPMScheduler): its folder scheduler/ is missing" in [
        p.what for p in found.problems
    ]


def test_the_packaged_sentence_transformers_folder_is_usable(engines: EngineRegistry) -> None:
    report = diagnose(resolve_source(MINILM.source).path, engines, [SMOLLM2, MINILM])
    found = report.inspection
    assert found.problems == []
    assert (found.format, found.capability, found.details["pooling"]) == ("sentence_transformers", "embeddings", "mean")
    assert found.details["modules"] == "Transformer (.), Pooling (1_Pooling), Normalize (2_Normalize)"
    assert {e.engine for e in report.engines if e.can_serve} == {"onnx", "torch"}
    assert report.usable
