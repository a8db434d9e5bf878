"""A Hugging Face transformers folder, or a sentence-transformers one (a transformers folder plus modules)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from inferrelay.doctor.findings import Inspection
from inferrelay.errors import InferrelayError
from inferrelay.models.facts import SHARD_INDEX, WEIGHT_PATTERNS, model_facts

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.txt", "vocab.json", "spiece.model")
STATELESS_MODULES = ("Normalize",)
"""sentence-transformers modules that save nothing: their folder may be absent."""
GENERATIVE = ("ForCausalLM", "ForConditionalGeneration", "LMHeadModel")


def inspect_folder(path: Path) -> Inspection:
    format = "sentence_transformers" if (path / "modules.json").exists() else "hf_folder"
    found = Inspection(path, format)
    if not (path / "config.json").exists():
        found.problem(
            f"{path} has no config.json: not a Hugging Face model folder",
            "give the folder that holds config.json and the weights (for a pipeline: model_index.json)",
        )
        return found
    config = read_json(path / "config.json", found, "restore config.json from the model's source")
    if config is None:
        return found
    architectures = config.get("architectures") or [config.get("model_type")]
    found.architecture = str(architectures[0]) if architectures[0] else None
    generative = found.architecture is not None and found.architecture.endswith(GENERATIVE)
    found.capability = "chat" if generative else "embeddings"
    found.details = {
        "architecture": found.architecture,
        "model type": config.get("model_type"),
        "dtype": config.get("torch_dtype") or config.get("dtype"),
        "layers": config.get("num_hidden_layers"),
        "hidden size": config.get("hidden_size"),
        "context length": config.get("max_position_embeddings"),
    }
    _weights(path, found)
    _architecture_known(config, found)
    if not any((path / name).exists() for name in TOKENIZER_FILES):
        found.problem(
            f"no tokenizer file ({', '.join(TOKENIZER_FILES)}) in {path}",
            "copy the tokenizer files from the model's source",
        )
    if format == "sentence_transformers":
        _modules(path, found)
    return found


def read_json(path: Path, found: Inspection, fix: str) -> dict[str, Any] | None:
    """The JSON object in `path`, or None with a problem saying where it does not parse."""
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        found.problem(f"{path} is missing", fix)
        return None
    except json.JSONDecodeError as exc:
        found.problem(f"{path} does not parse as JSON: line {exc.lineno}, column {exc.colno}: {exc.msg}", fix)
        return None
    except (OSError, UnicodeDecodeError) as exc:
        found.problem(f"{path} cannot be read: {exc}", fix)
        return None
    if not isinstance(value, dict):
        found.problem(f"{path} holds a JSON {type(value).__name__}, not an object", fix)
        return None
    return value


def _weights(path: Path, found: Inspection) -> None:
    index = path / SHARD_INDEX
    if index.exists():
        shards = _index_shards(index, found)
        present = [s for s in shards if (path / s).is_file()]
        found.details["weight files"] = f"{len(present)} of {len(shards)} shards named by {SHARD_INDEX}"
        for shard in shards:
            if shard not in present:
                found.problem(
                    f"weight shard {shard} (named by {SHARD_INDEX}) is missing",
                    f"download {shard} again from the model's source ({len(present)} of {len(shards)} are here)",
                )
    else:
        files = next((sorted(path.glob(p)) for p in WEIGHT_PATTERNS if any(path.glob(p))), [])
        found.details["weight files"] = ", ".join(f.name for f in files) or "none"
        if not files:
            found.problem(f"no weight files ({', '.join(WEIGHT_PATTERNS)}) in {path}", "download the weights")
    if not found.usable:
        return
    try:
        found.facts = model_facts(path, found.format or "hf_folder")
    except InferrelayError as exc:  # a truncated safetensors file, a header that does not parse
        found.problem(exc.message, "download the named file again; compare its size with the source's")
        return
    found.details["parameters"] = found.facts.parameters
    found.details["weights size"] = found.facts.weight_bytes


def _index_shards(index: Path, found: Inspection) -> list[str]:
    content = read_json(index, found, f"restore {index.name} from the model's source")
    weight_map = content.get("weight_map") if content else None
    if not isinstance(weight_map, dict):
        if content is not None:
            found.problem(f"{index} has no weight_map object", f"restore {index.name} from the model's source")
        return []
    return sorted(set(map(str, weight_map.values())))


def _architecture_known(config: dict[str, Any], found: Inspection) -> None:
    """Whether the installed transformers has this model type and class; unknown without transformers."""
    try:
        import transformers
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    except ImportError:
        found.problem(
            "transformers is not installed: whether it knows this architecture is unknown",
            "pip install 'inferrelay[torch]'",
            blocking=False,
        )
        return
    model_type = config.get("model_type")
    architecture = found.architecture
    if model_type not in CONFIG_MAPPING_NAMES:
        found.problem(
            f"model type {model_type!r} is not known to transformers {transformers.__version__}",
            "upgrade transformers (pip install -U transformers), or convert the model to GGUF for llama.cpp",
        )
    elif architecture and not hasattr(transformers, architecture):
        found.problem(
            f"architecture {architecture!r} is not a class of transformers {transformers.__version__}",
            "upgrade transformers, or fix config.json's architectures",
        )


def _modules(path: Path, found: Inspection) -> None:
    raw = read_json_list(path / "modules.json", found)
    names = []
    for module in raw:
        kind = str(module.get("type", "?")).rsplit(".", 1)[-1]
        folder = str(module.get("path", ""))
        names.append(f"{kind} ({folder or '.'})")
        if folder and kind not in STATELESS_MODULES and not (path / folder).is_dir():
            found.problem(f"module {kind} names folder {folder}, which is missing", f"restore {folder}/")
        if kind == "Pooling" and (path / folder / "config.json").exists():
            pooling = read_json(path / folder / "config.json", found, f"restore {folder}/config.json") or {}
            modes = [k.removeprefix("pooling_mode_").removesuffix("_tokens") for k, v in pooling.items() if v is True]
            found.details["pooling"] = ", ".join(modes) or "none"
    found.details["modules"] = ", ".join(names)


def read_json_list(path: Path, found: Inspection) -> list[dict[str, Any]]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        found.problem(f"{path} cannot be read as JSON: {exc}", f"restore {path.name} from the model's source")
        return []
    if not isinstance(value, list) or not all(isinstance(m, dict) for m in value):
        found.problem(f"{path} is not a list of modules", f"restore {path.name} from the model's source")
        return []
    return value
