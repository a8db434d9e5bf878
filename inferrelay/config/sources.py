"""Where a model's files are, what format they have, and a content hash for caching."""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from inferrelay.errors import ErrorKind, InferrelayError

PACKAGE_PREFIX = "package:"


@dataclass(frozen=True)
class ModelSource:
    path: Path
    format: str  # "gguf" | "hf_folder" | "sentence_transformers" | "onnx"

    @property
    def folder(self) -> Path:
        return self.path if self.path.is_dir() else self.path.parent

    def digest(self) -> str:
        return content_digest(self.path)


def resolve_source(source: str) -> ModelSource:
    """Turn a declared source into a path and format, or say clearly what is wrong."""
    path = _package_path(source) if source.startswith(PACKAGE_PREFIX) else Path(source).expanduser()
    if not path.exists():
        raise InferrelayError(ErrorKind.MODEL_LOAD_FAILED, f"model source {source!r}: {path} does not exist")
    return ModelSource(path, detect_format(path))


def detect_format(path: Path) -> str:
    if path.is_file():
        if path.suffix == ".onnx":
            return "onnx"
        with path.open("rb") as handle:
            if handle.read(4) == b"GGUF":
                return "gguf"
        raise InferrelayError(
            ErrorKind.MODEL_LOAD_FAILED, f"{path} is neither a GGUF file (no GGUF magic) nor an ONNX file"
        )
    if (path / "modules.json").exists():
        return "sentence_transformers"
    if (path / "config.json").exists():
        return "hf_folder"
    raise InferrelayError(ErrorKind.MODEL_LOAD_FAILED, f"{path} has no config.json: not a Hugging Face model folder")


def _package_path(source: str) -> Path:
    module, _, relative = source[len(PACKAGE_PREFIX) :].partition("/")
    if not module.isidentifier():  # a dotted name would import its parent package to find it
        raise InferrelayError(
            ErrorKind.MODEL_LOAD_FAILED,
            f"model source {source!r}: {module!r} is not a top-level package name (write package:<module>/<path>)",
        )
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise InferrelayError(
            ErrorKind.DEPENDENCY_MISSING,
            f"model package {module!r} is not installed",
            hint=f"pip install {module.replace('_', '-')}",
        )
    package = Path(next(iter(spec.submodule_search_locations)))
    path = package / relative
    if not in_folder(path, package):
        raise InferrelayError(
            ErrorKind.MODEL_LOAD_FAILED,
            f"model source {source!r} is not inside its package's folder: a packaged model is a path in the package",
        )
    return path


def in_folder(path: Path, folder: Path) -> bool:
    """Whether `path`'s real path (symlinks resolved, `..` applied) lies under `folder`'s real path.

    It answers the same whether or not the path exists: a refusal tells nothing about the disk.
    """
    try:
        return path.resolve().is_relative_to(folder.resolve())
    except (OSError, RuntimeError, ValueError):  # a symlink loop, a folder it may not enter, a NUL byte
        return False


def content_digest(path: Path) -> str:
    """sha256 over file names and contents: a derived artifact is rebuilt when any byte changes.

    Hashing is paid once per version of the files: the result is remembered
    under their sizes and modification times (as make and rsync judge change).
    """
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    versions = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    return _hash_files(path, versions)


@cache
def _hash_files(path: Path, versions: tuple[tuple[str, int, int], ...]) -> str:
    digest = hashlib.sha256()
    for file in (Path(name) for name, _size, _mtime in versions):
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        with file.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()[:16]
