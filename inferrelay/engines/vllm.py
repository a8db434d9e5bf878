"""vLLM on CUDA: chat and completion through its async engine (AsyncLLM), token by token; embeddings through
the offline pooling runner. The embedded GGUF or any Hugging Face folder.

Options (a model's `engine_options.vllm`) go to `vllm.LLM` as they are:
gpu_memory_utilization, max_model_len, tensor_parallel_size, dtype,
quantization (and any other engine argument vLLM takes). A GGUF is read with
its own tokenizer (vLLM reads Llama-architecture GGUF files).

Streaming: AsyncLLM runs on a loop thread of its own (engines/async_bridge.py)
and hands back each step's new text (RequestOutputKind.DELTA); a caller who
stops reading aborts the request inside vLLM, so its slot is freed at once.
The chat template is applied and tokenized here, with the model's own
tokenizer, so vLLM gets the token ids the other engines use (caller text as
text: engines/prompt_ids.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from inferrelay.config.schema import ModelSpec
from inferrelay.config.sources import resolve_source
from inferrelay.engines.async_bridge import LoopThread
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
from inferrelay.engines.chat_template import template_errors
from inferrelay.engines.cuda import cuda_missing, library_missing
from inferrelay.engines.optional import require
from inferrelay.engines.prompt_ids import HFPromptTokenizer, chat_prompt_ids
from inferrelay.errors import ErrorKind, InferrelayError, bad_request

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
            return _async_decoder(vllm, arguments, source, model)
        except (OSError, ValueError, RuntimeError) as exc:
            raise InferrelayError(ErrorKind.MODEL_LOAD_FAILED, f"vLLM could not load {source.path}: {exc}") from exc


def _pooling(vllm: Any, arguments: dict[str, Any]) -> Any:
    """The pooling runner: `runner="pooling"` in current vLLM, `task="embed"` in older releases."""
    try:
        return vllm.LLM(**arguments, runner="pooling")
    except TypeError:
        return vllm.LLM(**arguments, task="embed")


def _async_decoder(vllm: Any, arguments: dict[str, Any], source: Any, spec: ModelSpec) -> VllmDecoder:
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.sampling_params import RequestOutputKind

    from inferrelay.engines.torch import TRANSFORMERS, from_pretrained_args

    tokenizer = require(*TRANSFORMERS).AutoTokenizer.from_pretrained(**from_pretrained_args(source))
    loop = LoopThread("vllm")

    async def start() -> Any:
        try:
            from vllm.v1.engine.async_llm import AsyncLLM
        except ImportError:  # releases before the V1 engine
            from vllm import AsyncLLMEngine as AsyncLLM
        return AsyncLLM.from_engine_args(AsyncEngineArgs(**arguments))

    def sampling(**values: Any) -> Any:
        return vllm.SamplingParams(**values, output_kind=RequestOutputKind.DELTA)

    return VllmDecoder(loop.run(start()), loop, sampling, tokenizer, spec)


class VllmDecoder(TextModel):
    """Requests from any thread go to one AsyncLLM, which batches them continuously on the GPU."""

    engine_name = "vllm"

    def __init__(self, engine: Any, loop: LoopThread, sampling: Any, tokenizer: Any, spec: ModelSpec) -> None:
        self._engine = engine
        self._loop = loop
        self._sampling = sampling
        self._tokenizer = tokenizer
        self._text = HFPromptTokenizer(tokenizer)
        self.context_length = spec.context_length

    def prompt(self, request: GenerationRequest) -> dict[str, list[int]]:
        """Token ids, not text: vLLM would parse special-token text in a caller's message (engines/prompt_ids.py).
        An empty prompt starts from the BOS token, as in the other engines."""
        if request.messages is None:
            ids = self._text.prompt(request.prompt or "")
        else:
            ids = chat_prompt_ids(self._render, request.messages, self._text)
        if not ids and self._tokenizer.bos_token_id is None:
            raise bad_request("prompt is empty, and this model has no start-of-text token to begin from", "prompt")
        return {"prompt_token_ids": ids or [self._tokenizer.bos_token_id]}

    def _render(self, messages: list[dict[str, Any]]) -> str:
        with template_errors():
            return str(self._tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))

    def stream(self, request: GenerationRequest) -> Iterator[Piece]:
        s = request.sampling
        params = self._sampling(
            temperature=s.temperature, top_p=s.top_p, seed=s.seed,
            max_tokens=request.max_tokens or DEFAULT_MAX_TOKENS, stop=list(request.stop) or None,
        )  # fmt: skip
        request_id = uuid.uuid4().hex
        outputs = self._engine.generate(request_id=request_id, prompt=self.prompt(request), sampling_params=params)
        yield from _pieces(self._loop.iterate(outputs, on_abandon=lambda: _abort(self._engine, request_id)))

    def close(self) -> None:
        shutdown = getattr(self._engine, "shutdown", None)
        if shutdown is not None:
            shutdown()
        self._loop.close()


def _pieces(outputs: Iterator[Any]) -> Iterator[Piece]:
    """vLLM's DELTA outputs as pieces: each step's new text, then the finish with usage."""
    prompt_tokens = completion_tokens = 0
    finish: str | None = None
    for output in outputs:
        if output.prompt_token_ids:
            prompt_tokens = len(output.prompt_token_ids)
        answer = output.outputs[0]
        completion_tokens += len(answer.token_ids)
        if answer.text:
            yield Piece(answer.text)
        if output.finished:
            finish = "length" if answer.finish_reason == "length" else "stop"
    yield Piece("", finish or "stop", prompt_tokens, completion_tokens)


async def _abort(engine: Any, request_id: str) -> None:
    result = engine.abort(request_id)
    if hasattr(result, "__await__"):
        await result


class VllmEncoder(EmbeddingModel):
    engine_name = "vllm"

    def __init__(self, llm: Any, spec: ModelSpec) -> None:
        self._llm = llm
        self.context_length = spec.context_length

    def embed(self, texts: list[str], truncate: bool = True) -> Embeddings:
        """Truncated to the window by vLLM itself (truncate_prompt_tokens), or refused by it when asked not to."""
        options = {"truncate_prompt_tokens": self.context_length} if truncate else {}
        outputs = self._llm.embed(texts, use_tqdm=False, **options)
        vectors = np.array([o.outputs.embedding for o in outputs], dtype=np.float32)
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return Embeddings(vectors, sum(len(o.prompt_token_ids) for o in outputs))

    def close(self) -> None:
        del self._llm
