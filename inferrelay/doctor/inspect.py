"""Inspect a model file or folder without loading it: its format, what it is, and what is broken."""

from __future__ import annotations

from pathlib import Path

from inferrelay.doctor.diffusers import inspect_pipeline
from inferrelay.doctor.findings import Inspection
from inferrelay.doctor.folders import inspect_folder
from inferrelay.errors import InferrelayError
from inferrelay.models.facts import model_facts
from inferrelay.models.gguf import MAGIC, GgufError, read_gguf_header

LFS_POINTER = b"version https://git-lfs"


def inspect_model(path: Path) -> Inspection:
    if not path.exists():
        found = Inspection(path, None)
        found.problem(f"{path} does not exist", "check the path; a relative path is taken from the current folder")
        return found
    if path.is_dir():
        if (path / "model_index.json").exists():
            return inspect_pipeline(path)
        return inspect_folder(path)
    with path.open("rb") as handle:
        head = handle.read(64)
    if head.startswith(MAGIC):
        return _gguf(path)
    if path.suffix == ".onnx":
        return _onnx(path)
    found = Inspection(path, None)
    if head.startswith(LFS_POINTER):
        found.problem(
            f"{path} is a Git LFS pointer ({path.stat().st_size} bytes), not the model's data",
            "fetch the real file: git lfs pull (in the repository it came from)",
        )
    elif path.suffix == ".gguf":
        found.problem(
            f"{path} has no GGUF magic: it starts with {head[:8]!r}, not {MAGIC!r}",
            "the file is not a GGUF (an error page saved under the name? another format?): download it again",
        )
    else:
        found.problem(
            f"{path} is neither a GGUF file nor an ONNX file (.onnx)",
            "give a .gguf or .onnx file, or a Hugging Face, sentence-transformers or diffusers folder",
        )
    return found


def _gguf(path: Path) -> Inspection:
    found = Inspection(path, "gguf", capability="chat")
    try:
        header = read_gguf_header(path)
    except GgufError as exc:
        found.problem(str(exc), "download or copy the file again, and compare its size or checksum with the source's")
        return found
    found.architecture = header.architecture
    found.details = {
        "GGUF version": header.version,
        "architecture": header.architecture,
        "quantisation": header.type_name,
        "context length": header.field("context_length"),
        "tensors": len(header.tensors),
        "parameters": header.parameters,
        "size": header.file_size,
    }
    try:
        found.facts = model_facts(path, "gguf")
    except InferrelayError as exc:
        found.problem(exc.message, "download or copy the file again")
    if header.architecture is None:
        found.problem("the header names no general.architecture", "llama.cpp needs it: re-convert the model", False)
    return found


def _onnx(path: Path) -> Inspection:
    found = Inspection(path, "onnx")
    try:
        import onnx
    except ImportError:
        found.problem("the onnx library is not installed: the graph cannot be read", "pip install onnx", False)
        return found
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends: the file is not a readable graph
        found.problem(f"{path} is not a readable ONNX model: {exc}", "export or download it again")
        return found
    opsets = {entry.domain or "ai.onnx": entry.version for entry in model.opset_import}
    found.details = {
        "IR version": model.ir_version,
        "opset": opsets.get("ai.onnx"),
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "inputs": ", ".join(_signature(v) for v in model.graph.input),
        "outputs": ", ".join(_signature(v) for v in model.graph.output),
    }
    outputs = {v.name for v in model.graph.output}
    found.capability = "embeddings" if outputs & {"embedding", "sentence_embedding"} else None
    for location in sorted(_external_files(model)):
        if not (path.parent / location).is_file():
            found.problem(
                f"external weights {location} (named by the graph) are missing beside {path.name}",
                f"copy {location} into {path.parent}",
            )
    found.facts = model_facts(path, "onnx")
    return found


def _signature(value: object) -> str:
    tensor = value.type.tensor_type  # type: ignore[attr-defined]
    dims = [d.dim_param or str(d.dim_value) for d in tensor.shape.dim]
    return f"{value.name}[{'x'.join(dims)}]"  # type: ignore[attr-defined]


def _external_files(model: object) -> set[str]:
    files = set()
    for tensor in model.graph.initializer:  # type: ignore[attr-defined]
        for entry in tensor.external_data:
            if entry.key == "location":
                files.add(entry.value)
    return files
