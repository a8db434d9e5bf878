"""DeepSpeed inference: a transformers model wrapped by `deepspeed.init_inference`, fp16 or bf16, on one CUDA GPU.

Kernel injection replaces the model's layers with DeepSpeed's fused kernels
where DeepSpeed supports the architecture; otherwise the model runs as
transformers built it, under DeepSpeed's engine. Generation then goes
through the torch engine's decoder.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

from inferrelay.config.schema import ModelSpec
from inferrelay.engines.base import Capability, Engine, LoadedModel, ProbeResult
from inferrelay.engines.cuda import cuda_missing, library_missing
from inferrelay.engines.optional import require
from inferrelay.errors import ErrorKind, InferrelayError

log = logging.getLogger(__name__)

DEEPSPEED = ("deepspeed", "'inferrelay[deepspeed]'")
HALF = ("float16", "bfloat16")


class DeepSpeedEngine(Engine):
    name = "deepspeed"
    capabilities = frozenset({Capability.CHAT, Capability.COMPLETION})  # SPEC §2: DeepSpeed serves decoders
    reads = frozenset({"hf_folder", "gguf"})

    def probe(self) -> ProbeResult:
        return library_missing(*DEEPSPEED) or cuda_missing(self.name) or ProbeResult(True, "ok")

    def load(self, model: ModelSpec, device: str, home: Path) -> LoadedModel:
        deepspeed = require(*DEEPSPEED)
        torch = require("torch", "'inferrelay[torch]'")
        from inferrelay.engines.torch import TorchEngine, Wrappable

        if not device.startswith("cuda") and device != "auto":
            raise InferrelayError(ErrorKind.ENGINE_UNAVAILABLE, f"deepspeed runs on CUDA, not {device}")
        dtype = model.dtype if model.dtype in HALF else "float16"
        loaded = TorchEngine().load(model.model_copy(update={"dtype": dtype}), "cuda", home)
        assert isinstance(loaded, Wrappable)

        def inference(module: Any) -> Any:
            _forget_quantizer(module)
            try:
                engine = deepspeed.init_inference(module, dtype=getattr(torch, dtype), replace_with_kernel_inject=True)
            except (ValueError, NotImplementedError, RuntimeError) as exc:  # an architecture without kernels
                log.info("deepspeed has no kernels for %s (%s); running it without injection", model.name, exc)
                engine = deepspeed.init_inference(module, dtype=getattr(torch, dtype), replace_with_kernel_inject=False)
            return engine.module

        loaded.wrap(inference)
        loaded.engine_name = self.name
        log.info("deepspeed serves %s in %s", model.name, dtype)
        return loaded


def _forget_quantizer(module: Any) -> None:
    """transformers dequantizes a GGUF as it loads it but keeps its quantizer, which forbids the `.half()` DeepSpeed
    calls (seen on an H100, transformers 5.17): the weights are plain tensors, so the flag goes."""
    for name, value in (("hf_quantizer", None), ("is_quantized", False), ("quantization_method", None)):
        if getattr(module, name, None) is not None:
            with contextlib.suppress(AttributeError):  # a property derived from hf_quantizer
                setattr(module, name, value)
