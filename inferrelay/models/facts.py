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
    if format == "gguf":
        return _gguf(path)
    if format in ("hf_folder", "sentence_transformers"):
        return _folder(path, format)
    if format == "onnx":
        size = path.stat().st_size + sum(p.stat().st_size for p in path.parent.glob(f"{path.stem}*.data"))
        return ModelFacts(format, path, None, None, None, size, None, None, None, None, None, None)
    raise InferrelayError(ErrorKind.MODEL_LOAD_FAILED, f"{path}: no facts for format {format!r}")


def _failed(message: str) -> InferrelayError:
    return InferrelayError(ErrorKind.MODEL_LOAD_FAILED, message)


def _gguf(path: Path) -> ModelFacts:
    try:
        header = read_gguf_header(path)
    except GgufError as exc:
        raise _failed(str(exc)) from exc
    heads = header.field("attention.head_count")
    hidden = header.field("embedding_length")
    head_dim = header.field("attention.key_length") or (hidden // heads if hidden and heads else None)
    return ModelFacts(
        "gguf",
        path,
        header.architecture,
        header.parameters,
        header.type_name,
        header.file_size,
        header.field("block_count"),
        hidden,
        heads,
        header.field("attention.head_count_kv", heads),
        head_dim,
        header.field("context_length"),
    )


def _folder(path: Path, format: str) -> ModelFacts:
    config_path = path / "config.json"
    try:
        config: dict[str, Any] = json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:
        raise _failed(f"{config_path}: cannot be read as JSON: {exc}") from exc
    nested = config.get("text_config")
    text: dict[str, Any] = nested if isinstance(nested, dict) else config
    weights = _weight_files(path)
    heads = text.get("num_attention_heads")
    hidden = text.get("hidden_size")
    architectures = config.get("architectures") or [config.get("model_type")]
    return ModelFacts(
        format,
        path,
        str(architectures[0]) if architectures and architectures[0] else None,
        _safetensors_parameters(weights),
        config.get("torch_dtype") or config.get("dtype"),
        sum(w.stat().st_size for w in weights),
        text.get("num_hidden_layers"),
        hidden,
        heads,
        text.get("num_key_value_heads", heads),
        text.get("head_dim") or (hidden // heads if hidden and heads else None),
        text.get("max_position_embeddings"),
    )


def _weight_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.exists():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError) as exc:
            raise _failed(f"{index}: not a valid shard index: {exc}") from exc
        missing = [s for s in shards if not (folder / s).exists()]
        if missing:
            raise _failed(f"{folder}: weight shards named by {index.name} are missing: {', '.join(missing)}")
        return [folder / s for s in shards]
    for pattern in WEIGHT_PATTERNS:
        found = sorted(folder.glob(pattern))
        if found:
            return found
    raise _failed(f"{folder}: config.json but no weight files (*.safetensors, *.bin)")


def _safetensors_parameters(files: list[Path]) -> int | None:
    """Sum of the tensors' elements, from each file's JSON header; None for pickled (.bin) weights."""
    total = 0
    for file in files:
        if file.suffix != ".safetensors":
            return None
        try:
            with file.open("rb") as handle:
                (length,) = struct.unpack("<Q", handle.read(8))
                if length > file.stat().st_size:
                    raise ValueError(f"a header of {length} bytes in a file of {file.stat().st_size}")
                header = json.loads(handle.read(length))
        except (OSError, ValueError, struct.error) as exc:
            raise _failed(f"{file}: not a readable safetensors file: {exc}") from exc
        total += sum(prod(t["shape"]) for name, t in header.items() if name != "__metadata__")
    return total
