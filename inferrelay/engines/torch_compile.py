"""torch.compile for the torch engine's encoders (`engine_options.torch.compile`).

TorchInductor fuses the encoder's elementwise work (bias, GELU, layer norm,
softmax) into generated C++ kernels around the matrix products: on the 2-core
VM 1.15x the eager rows/s of the same model in a batch job (docs/batch.md). It
costs a compile when the model loads (23 s cold, 5-10 s once the kernels are
in $INFERRELAY_HOME/cache/inductor), which is why a server does not compile
unless asked and a batch job does only when it has enough rows to pay it back
(batch/job.py, tune/book.py). The compile needs a C++ compiler: where it
fails, the model runs eager and says why, once, in the log.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def wants_compile(options: dict[str, Any]) -> bool:
    return bool(options.get("torch", {}).get("compile", False))


def compiled(model: Any, home: Path) -> Any:
    """`model` behind torch.compile: dynamic shapes (every batch size and length share one graph), kernels cached
    under `home`. The compile itself happens at the first call (`warm_up`)."""
    import torch

    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(home / "cache" / "inductor"))
    return torch.compile(model, dynamic=True)


def warm_up(name: str, run: Callable[[], object], eager: Callable[[], None]) -> str | None:
    """Compile now, by calling `run` (batches of two rows and of one, the shapes a job and a server send); on any
    failure call `eager` to put the uncompiled model back. The failure's reason, or None when compiled."""
    started = time.perf_counter()
    try:
        run()
    except Exception as exc:  # inductor's failures have no common type: no compiler, an unsupported op, ...
        eager()
        reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        log.warning("%s: torch.compile failed here, running eager: %s", name, reason)
        return reason
    log.info("%s: compiled by torch.compile in %.1f s", name, time.perf_counter() - started)
    return None
