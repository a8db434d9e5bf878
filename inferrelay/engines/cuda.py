"""Whether a GPU-only engine can run here, asked cheaply: torch's view of CUDA, without initialising anything else."""

from __future__ import annotations

import importlib.util

from inferrelay.engines.base import ProbeResult
from inferrelay.errors import ErrorKind, InferrelayError, dependency_missing


def cuda_missing(engine: str, min_capability: tuple[int, int] = (7, 0)) -> ProbeResult | None:
    """None when CUDA is usable by `engine`; else the probe result that says why not."""
    if importlib.util.find_spec("torch") is None:
        error = dependency_missing("torch", "'inferrelay[torch]'", f"{engine} runs on torch with CUDA")
        return ProbeResult(False, f"{error.message}; fix: {error.hint}", error=error)
    import torch

    if not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        return _unavailable(f"{engine} needs a CUDA GPU: torch {torch.__version__} ({build}) sees none")
    capability = torch.cuda.get_device_capability(0)
    if capability < min_capability:
        name = torch.cuda.get_device_name(0)
        wanted = ".".join(map(str, min_capability))
        return _unavailable(f"{engine} needs compute capability {wanted}+; {name} has {capability[0]}.{capability[1]}")
    return None


def library_missing(module: str, install: str) -> ProbeResult | None:
    """Checked by finding the module, not importing it: vLLM and DeepSpeed take seconds to import."""
    if importlib.util.find_spec(module) is not None:
        return None
    error = dependency_missing(module, install)
    return ProbeResult(False, f"{error.message}; fix: {error.hint}", error=error)


def _unavailable(reason: str) -> ProbeResult:
    return ProbeResult(False, reason, error=InferrelayError(ErrorKind.ENGINE_UNAVAILABLE, reason))
