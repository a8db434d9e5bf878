"""vLLM's offline engine, in process, on CUDA: the embedded GGUF or any Hugging Face folder; embeddings through
its pooling runner.

Options (a model's `engine_options.vllm`) go to `vllm.LLM` as they are:
gpu_memory_utilization, max_model_len, tensor_parallel_size, dtype,
quantization (and any other engine argument vLLM takes). A GGUF is read with
its own tokenizer (vLLM reads Llama-architecture GGUF files).

Streaming: the offline engine returns whole answers, so a stream is one
piece followed by the finish; token-by-token streaming through vLLM's
AsyncLLM is to be verified on a GPU (docs/gpu.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from inferrelay.config.schema import ModelSpec
from inferrelay.config.sources import resolve_source
from inferrelay.engines.base import (
    Capability,
    EmbeddingModel,
    Embeddings,
    Engine,
    GenerationRequest,
    LoadedModel,
    Piece,
    ProbeResult,
    TextModel,
)
from inferrelay.engines.cuda import cuda_missing, library_missing
from inferrelay.engines.optional import require
from inferrelay.errors import ErrorKind, InferrelayError

VLLM = ("vllm", "'inferrelay[vllm]'")
DEFAULT_MAX_TOKENS = 256


class VllmEngine(Engine):
    name = "vllm"
    capabilities = frozenset({Capability.CHAT, Capability.COMPLETION, Capability.EMBEDDINGS})
    reads = frozenset({"gguf", "hf_folder", "sentence_transformers"})

    def probe(self) -> ProbeResult:
        return library_missing(*VLLM) or cuda_missing(self.name) or ProbeResult(True, "ok")

    def load(self, model: ModelSpec, device: str, home: Path) -> LoadedModel:
        vllm = require(*VLLM)
        source = resolve_source(model.source)
        if source.format not in self.reads:
            raise InferrelayError(ErrorKind.MODEL_LOAD_FAILED, f"vLLM cannot read {source.format} files")
        arguments: dict[str, Any] = {"model": str(source.path), "max_model_len": model.context_length}
        if source.format == "gguf":
            arguments["tokenizer"] = str(source.path)
        if model.dtype != "auto":
            arguments["dtype"] = model.dtype
        arguments |= model.engine_options.get(self.name, {})
        try:
            if model.is_encoder:
                return VllmEncoder(_pooling(vllm, arguments), model)
            return VllmDecoder(vllm, vllm.LLM(**arguments), model)
        except (OSError, ValueError, RuntimeError) as exc:
            raise InferrelayError(ErrorKind.MODEL_LOAD_FAILED, f"vLLM could not load {source.path}: {exc}") from exc


def _pooling(vllm: Any, arguments: dict[str, Any]) -> Any:
    """The pooling runner: `runner="pooling"` in current vLLM, `task="embed"` in older releases."""
    try:
        return vllm.LLM(**arguments, runner="pooling")
    except TypeError:
        return vllm.LLM(**arguments, task="embed")


class VllmDecoder(TextModel):
    engine_name = "vllm"

    def __init__(self, vllm: Any, llm: Any, spec: ModelSpec) -> None:
        self._vllm = vllm
        self._llm = llm
        self.context_length = spec.context_length

    def stream(self, request: GenerationRequest) -> Iterator[Piece]:
        s = request.sampling
        params = self._vllm.SamplingParams(
            temperature=s.temperature, top_p=s.top_p, seed=s.seed,
            max_tokens=request.max_tokens or DEFAULT_MAX_TOKENS, stop=list(request.stop) or None,
        )  # fmt: skip
        if request.messages is not None:
            (output,) = self._llm.chat([request.messages], params, use_tqdm=False)
        else:
            (output,) = self._llm.generate([request.prompt or ""], params, use_tqdm=False)
        answer = output.outputs[0]
        yield Piece(answer.text)
        finish = "length" if answer.finish_reason == "length" else "stop"
        yield Piece("", finish, len(output.prompt_token_ids), len(answer.token_ids))

    def close(self) -> None:
        del self._llm


class VllmEncoder(EmbeddingModel):
    engine_name = "vllm"

    def __init__(self, llm: Any, spec: ModelSpec) -> None:
        self._llm = llm
        self.context_length = spec.context_length

    def embed(self, texts: list[str]) -> Embeddings:
        outputs = self._llm.embed(texts, use_tqdm=False)
        vectors = np.array([o.outputs.embedding for o in outputs], dtype=np.float32)
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return Embeddings(vectors, sum(len(o.prompt_token_ids) for o in outputs))

    def close(self) -> None:
        del self._llm
