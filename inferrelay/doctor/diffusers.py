"""A diffusers pipeline folder: model_index.json names its components; each is judged on its own.

A component is usable alone when its folder is there, its config parses and,
for a model, its weights are whole. The pipeline is usable when all are.
"""

from __future__ import annotations

import json
from pathlib import Path

from inferrelay.doctor.findings import Component, Inspection
from inferrelay.doctor.folders import read_json
from inferrelay.errors import InferrelayError
from inferrelay.models.facts import model_facts

CONFIG_FILES = ("config.json", "scheduler_config.json", "tokenizer_config.json", "preprocessor_config.json")
WEIGHTLESS = ("Scheduler", "Tokenizer", "TokenizerFast", "FeatureExtractor", "ImageProcessor", "Processor")


def inspect_pipeline(path: Path) -> Inspection:
    found = Inspection(path, "diffusers", capability="image")
    index = read_json(path / "model_index.json", found, "restore model_index.json from the pipeline's source")
    if index is None:
        return found
    found.architecture = str(index.get("_class_name"))
    found.details = {"pipeline": found.architecture, "diffusers version": index.get("_diffusers_version")}
    for name, entry in index.items():
        if name.startswith("_") or not isinstance(entry, list) or len(entry) != 2:
            continue
        library, class_name = entry
        if library is None and class_name is None:  # an optional component the pipeline was saved without
            continue
        component = _component(path / name, name, library, class_name)
        found.components.append(component)
        if not component.usable:
            found.problem(
                f"component {name} ({library}.{class_name}): {component.note}",
                f"restore {name}/ from the pipeline's source; usable alone: "
                + (", ".join(c.name for c in found.components if c.usable) or "none so far"),
            )
    usable = [c.name for c in found.components if c.usable]
    found.details["components"] = f"{len(usable)} of {len(found.components)} usable"
    return found


def _component(folder: Path, name: str, library: str | None, class_name: str | None) -> Component:
    if not folder.is_dir():
        return Component(name, library, class_name, False, False, None, f"its folder {folder.name}/ is missing")
    config = next((folder / c for c in CONFIG_FILES if (folder / c).exists()), None)
    if config is None:
        return Component(name, library, class_name, True, False, None, f"no config file ({', '.join(CONFIG_FILES)})")
    try:
        json.loads(config.read_text())
    except (OSError, ValueError) as exc:
        return Component(name, library, class_name, True, False, None, f"{config.name} does not parse: {exc}")
    if class_name and class_name.endswith(WEIGHTLESS):
        return Component(name, library, class_name, True, True, None, "no weights needed")
    weights = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    if not weights:
        return Component(name, library, class_name, True, True, False, "no weight files (*.safetensors, *.bin)")
    if config.name == "config.json":
        try:
            model_facts(folder, "hf_folder")  # checks every safetensors file is whole
        except InferrelayError as exc:
            return Component(name, library, class_name, True, True, False, exc.message)
    size = sum(w.stat().st_size for w in weights)
    return Component(name, library, class_name, True, True, True, f"{len(weights)} weight file(s), {size} bytes")
