"""Lazy imports of optional heavy libraries: absence is a status with the install command."""

from __future__ import annotations

import importlib
from types import ModuleType

from inferrelay.engines.base import ProbeResult
from inferrelay.errors import InferrelayError, dependency_missing


def require(module: str, install: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise dependency_missing(module, install, exc) from exc


def probe_imports(*requirements: tuple[str, str]) -> ProbeResult:
    """Available when every (module, pip name) imports; else the first failure and its fix."""
    for module, install in requirements:
        try:
            require(module, install)
        except InferrelayError as err:
            return ProbeResult(False, f"{err.message}; fix: {err.hint}", error=err)
        except Exception as exc:  # present but broken (a bad build, a missing shared library)
            broken = dependency_missing(module, f"--force-reinstall {install}", f"{type(exc).__name__}: {exc}")
            return ProbeResult(False, f"{broken.message}; fix: {broken.hint}", error=broken)
    return ProbeResult(True, "ok")
