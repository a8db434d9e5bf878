"""Lazy imports of optional heavy libraries: absence is a status with the install command."""

from __future__ import annotations

import importlib
from types import ModuleType

from inferrelay.engines.base import ProbeResult
from inferrelay.errors import ErrorKind, InferrelayError, classify


def require(module: str, install: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise InferrelayError(
            ErrorKind.DEPENDENCY_MISSING,
            f"{module} cannot be imported ({exc})",
            hint=f"pip install {install}",
        ) from exc


def probe_imports(*requirements: tuple[str, str]) -> ProbeResult:
    """Available when every (module, pip name) imports; else the first failure and its fix."""
    for module, install in requirements:
        try:
            require(module, install)
        except InferrelayError as err:
            return ProbeResult(False, f"{err.message}; fix: {err.hint}", error=err)
        except Exception as exc:  # a library that is present but broken
            broken = classify(exc, loading=True)
            return ProbeResult(False, f"{module} failed to import: {exc}", error=broken)
    return ProbeResult(True, "ok")
