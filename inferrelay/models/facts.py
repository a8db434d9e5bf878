"""What a model's files say about it, without loading it: architecture, size, the dimensions of its KV cache."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from math import prod
from pathlib import Path
from typing import Any

from inferrelay.errors import ErrorKind, InferrelayError
from inferrelay.models.gguf import GgufError, read_gguf_header

WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt")
"""The first pattern with matches names a folder's weights: a folder holding both formats loads safetensors."""
SHARD_INDEX = "model.safetensors.index.json"


@dataclass(frozen=True)
class ModelFacts:
    format: str
    path: Path
    architecture: str | None
    parameters: int | None
    stored_dtype: str | None
    weight_bytes: int
    layers: int | None
    hidden_size: int | None
    attention_heads: int | None
    kv_heads: int | None
    head_dim: int | None
    trained_context: int | None


def model_facts(path: Path, format: str) -> ModelFacts:
    """The facts for a source of `format` ("gguf", "hf_folder", "sentence_transformers" or "onnx")."""
    if format == "gguf":
        return _gguf(path)
    if format in ("hf_folder", "sentence_transformers"):
        return _folder(path, format)
    if format == "onnx":
        return ModelFacts(format, path, None, None, None, _onnx_bytes(path), None, None, None, None, None, None)
    raise _failed(f"{path}: no facts for format {format!r}")


def _failed(message: str) -> InferrelayError:
    return InferrelayError(ErrorKind.MODEL_LOAD_FAILED, message)


def _int(value: object) -> int | None:
    """A dimension from metadata or config.json; anything but a positive integer counts as unknown."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _head_dim(explicit: object, hidden: int | None, heads: int | None) -> int | None:
    return _int(explicit) or (hidden // heads if hidden and heads else None)


def _gguf(path: Path) -> ModelFacts:
    try:
        header = read_gguf_header(path)
    except GgufError as exc:
        raise _failed(str(exc)) from exc
    heads = _int(header.field("attention.head_count"))
    hidden = _int(header.field("embedding_length"))
    return ModelFacts(
        "gguf",
        path,
        header.architecture,
        header.parameters,
        header.type_name,
        header.file_size,
        _int(header.field("block_count")),
        hidden,
        heads,
        _int(header.field("attention.head_count_kv")) or heads,
        _head_dim(header.field("attention.key_length"), hidden, heads),
        _int(header.field("context_length")),
    )


def _folder(path: Path, format: str) -> ModelFacts:
    """A transformers folder, or a sentence-transformers one (config.json and weights in its root)."""
    config_path = path / "config.json"
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:
        raise _failed(f"{config_path} cannot be read as JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise _failed(f"{config_path} holds a JSON {type(config).__name__}, not an object")
    nested = config.get("text_config")  # multimodal models keep the language model's dimensions here
    text: dict[str, Any] = nested if isinstance(nested, dict) else config
    weights = _weight_files(path)
    heads = _int(text.get("num_attention_heads"))
    hidden = _int(text.get("hidden_size"))
    architectures = config.get("architectures") or [config.get("model_type")]
    dtype = config.get("torch_dtype") or config.get("dtype")
    return ModelFacts(
        format,
        path,
        str(architectures[0]) if architectures[0] else None,
        _safetensors_parameters(weights),
        str(dtype) if dtype else None,
        sum(w.stat().st_size for w in weights),
        _int(text.get("num_hidden_layers")),
        hidden,
        heads,
        _int(text.get("num_key_value_heads")) or heads,
        _head_dim(text.get("head_dim"), hidden, heads),
        _int(text.get("max_position_embeddings")),
    )


def _weight_files(folder: Path) -> list[Path]:
    index = folder / SHARD_INDEX
    if index.exists():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise _failed(f"{index} is not a valid shard index: {exc}") from exc
        missing = [shard for shard in shards if not (folder / shard).is_file()]
        if missing:
            raise _failed(f"{folder}: weight shards named by {index.name} are missing: {', '.join(missing)}")
        return [folder / shard for shard in shards]
    for pattern in WEIGHT_PATTERNS:
        found = sorted(folder.glob(pattern))
        if found:
            return found
    raise _failed(f"{folder} has config.json but no weight files ({', '.join(WEIGHT_PATTERNS)})")


def _safetensors_parameters(files: list[Path]) -> int | None:
    """The tensors' elements, summed from each file's header; None for pickled (.bin, .pt) weights."""
    if any(file.suffix != ".safetensors" for file in files):
        return None
    total = 0
    for file in files:
        try:
            total += _safetensors_elements(file)
        except (OSError, ValueError, KeyError, TypeError, AttributeError, struct.error) as exc:
            raise _failed(f"{file} is not a readable safetensors file: {exc}") from exc
    return total


def _safetensors_elements(file: Path) -> int:
    """A little-endian uint64 header length, a JSON header of {name: {dtype, shape, data_offsets}}, the data."""
    size = file.stat().st_size
    with file.open("rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        if length > size - 8:
            raise ValueError(f"its header claims {length} bytes, the file has {size}")
        header = json.loads(handle.read(length))
    tensors = [info for name, info in header.items() if name != "__metadata__"]
    end = max((info["data_offsets"][1] for info in tensors), default=0)
    if 8 + length + end > size:
        raise ValueError(f"truncated: its tensors need {8 + length + end} bytes, the file has {size}")
    return sum(prod(info["shape"]) for info in tensors)


def _onnx_bytes(model: Path) -> int:
    """The graph plus its external data files beside it ("model.onnx.data", "model.onnx_data", "model.data")."""
    sidecars = [p for p in model.parent.glob(f"{model.name}?*") if p.is_file()]
    sidecars += [p for p in [model.with_suffix(".data")] if p.is_file()]
    return sum(p.stat().st_size for p in [model, *sidecars])
