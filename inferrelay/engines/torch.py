"""PyTorch through transformers: GGUF files (dequantized) and Hugging Face folders."""

from __future__ import annotations

import contextlib
import gc
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from inferrelay.config.schema import ModelSpec
from inferrelay.config.sources import ModelSource, resolve_source
from inferrelay.engines.base import (
    Capability,
    Constraint,
    EmbeddingModel,
    Embeddings,
    Engine,
    Feature,
    GenerationRequest,
    LoadedModel,
    ProbeResult,
    Sampling,
    TokenTextModel,
)
from inferrelay.engines.chat_template import template_errors
from inferrelay.engines.constrained import GuideMaker, hf_tokenizer
from inferrelay.engines.decoding import LogitSteps, byte_level_bytes, check_input_lengths, refuse_cut
from inferrelay.engines.devices import choose_device, pick_dtype
from inferrelay.engines.memory_rule import DTYPE, MIB, EngineMemory
from inferrelay.engines.optional import probe_imports, require
from inferrelay.engines.pooling import mean_pool_normalized
from inferrelay.engines.prompt_ids import HFPromptTokenizer, chat_prompt_ids
from inferrelay.engines.token_bound import longest_entry
from inferrelay.engines.torch_batch import PaddedBatcher, seeded_generator
from inferrelay.engines.torch_compile import compiled, wants_compile, warm_up
from inferrelay.engines.window import Window, longest_token, window_of
from inferrelay.errors import ErrorKind, InferrelayError, classify

TORCH = ("torch", "'inferrelay[torch]'")
TRANSFORMERS = ("transformers", "'inferrelay[torch]'")


TORCH_DTYPES = ("auto", "float32", "float16", "bfloat16")
DEFAULT_PARALLEL = 4
"""Concurrent requests a decoder takes into one padded batch (`engine_options.torch.parallel`; 1: no batching)."""


class TorchEngine(Engine):
    name = "torch"
    capabilities = frozenset({Capability.CHAT, Capability.COMPLETION, Capability.EMBEDDINGS})
    reads = frozenset({"gguf", "hf_folder", "sentence_transformers"})
    honours = frozenset({Feature.CONSTRAINT, Feature.LOGPROBS, Feature.PENALTIES})
    memory = EngineMemory(DTYPE, DTYPE, DTYPE, 128 * MIB, 32 * MIB)
    precision_steps = (("decoder", "float32", "bfloat16"), ("encoder", "float32", "bfloat16"))
    default_for = frozenset(
        {("gguf", "decoder"), ("hf_folder", "decoder"), ("hf_folder", "encoder"), ("sentence_transformers", "encoder")}
    )
    preference = 30

    def probe(self) -> ProbeResult:
        return probe_imports(TORCH, TRANSFORMERS)

    def load(self, model: ModelSpec, device: str, home: Path) -> LoadedModel:
        torch = require(*TORCH)
        transformers = require(*TRANSFORMERS)
        source = resolve_source(model.source)
        if source.format not in ("gguf", "hf_folder", "sentence_transformers"):
            raise InferrelayError(ErrorKind.MODEL_LOAD_FAILED, f"transformers cannot read {source.format} files")
        if model.dtype not in TORCH_DTYPES:
            raise InferrelayError(
                ErrorKind.MODEL_LOAD_FAILED,
                f"torch runs a model in {', '.join(TORCH_DTYPES)}, not {model.dtype!r}",
                hint="int8 weights are the onnx engine's: put onnx first in the model's engines",
            )
        device = choose_device(device)
        dtype = getattr(torch, pick_dtype(model.dtype, device))
        torch.set_num_threads(os.cpu_count() or 1)
        kwargs = from_pretrained_args(source)
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(**kwargs)
            if model.is_encoder:
                encoder = transformers.AutoModel.from_pretrained(**kwargs, dtype=dtype)
                window = (
                    model.context_length if source.format == "gguf" else window_of(source.path, model.context_length)
                )
                loaded = TorchEncoder(_place(encoder, device), tokenizer, device, window)
                if wants_compile(model.engine_options):
                    loaded.compile(model.name, home)
                return loaded
            decoder = transformers.AutoModelForCausalLM.from_pretrained(**kwargs, dtype=dtype)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise InferrelayError(
                ErrorKind.MODEL_LOAD_FAILED, f"transformers could not load {source.path}: {exc}"
            ) from exc
        parallel = int(model.engine_options.get("torch", {}).get("parallel", DEFAULT_PARALLEL))
        return TorchDecoder(_place(decoder, device), tokenizer, model, device, parallel)


def _place(module: Any, device: str) -> Any:
    """The module on `device`. One that does not fit is raised as out_of_memory with no traceback attached: the
    traceback's frames would keep the half-moved weights on the GPU, and the ladder's next rung needs that memory."""
    failure: InferrelayError | None = None
    try:
        return module.to(device).eval()
    except RuntimeError as exc:
        failure = classify(exc, loading=True)
    del module
    gc.collect()
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()
    raise InferrelayError(failure.kind, failure.message, hint=failure.hint)


def from_pretrained_args(source: ModelSource) -> dict[str, Any]:
    if source.format == "gguf":
        return {"pretrained_model_name_or_path": str(source.folder), "gguf_file": source.path.name}
    return {"pretrained_model_name_or_path": str(source.path)}


class Wrappable:
    """A model around a torch module that another engine may wrap (DeepSpeed's inference engine)."""

    _model: Any
    _device: str

    def wrap(self, wrapper: Callable[[Any], Any]) -> None:
        self._model = wrapper(self._model)

    def close(self) -> None:
        """The memory back now, not at the next collection: a reload after an out-of-memory must find it free."""
        self._model = None
        gc.collect()
        if self._device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()


class TorchDecoder(Wrappable, TokenTextModel):
    engine_name = "torch"

    def __init__(self, model: Any, tokenizer: Any, spec: ModelSpec, device: str, parallel: int = 1) -> None:
        self._model = model
        self._tokenizer = tokenizer
        self._text = HFPromptTokenizer(tokenizer)
        self._device = device
        self.context_length = spec.context_length
        self.bos_token = tokenizer.bos_token_id
        eos = model.generation_config.eos_token_id
        self._eos = set(eos if isinstance(eos, list) else [eos]) | {tokenizer.eos_token_id}
        self._guides = GuideMaker(hf_tokenizer(tokenizer, self._eos), model.config.vocab_size)
        self.longest_token_bytes = longest_entry(tokenizer.get_vocab())
        self.parallel = max(1, parallel)
        self._batcher: PaddedBatcher | None = None
        if self.parallel > 1:
            pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self._eos)
            forward = lambda **inputs: self._model(**inputs)  # noqa: E731  (a wrapper may replace the model)
            self._batcher = PaddedBatcher(forward, device, self._eos, pad, _pick, self.parallel)

    def close(self) -> None:
        if self._batcher is not None:
            self._batcher.close()
        super().close()

    def encode(self, request: GenerationRequest) -> list[int]:
        if request.messages is not None:
            if not self._tokenizer.chat_template:
                raise InferrelayError(ErrorKind.BAD_REQUEST, "this model has no chat template; use /v1/completions")
            return chat_prompt_ids(self._render, request.messages, self._text)
        return self._text.prompt(request.prompt or "")

    def _render(self, messages: list[dict[str, Any]]) -> str:
        with template_errors():
            return str(self._tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))

    def generate_ids(
        self, ids: list[int], max_new: int, sampling: Sampling, constraint: Constraint | None = None
    ) -> Iterator[int]:
        """The tokens, one by one; with batching on, decoded in a padded batch with concurrent requests."""
        guide = self._guides.start(constraint)
        if self._batcher is not None:
            return self._batcher.generate_ids(ids, max_new, sampling, guide)
        return self._alone(ids, max_new, sampling, guide)

    def _alone(self, ids: list[int], max_new: int, sampling: Sampling, guide: Any) -> Iterator[int]:
        import torch

        steps = LogitSteps(sampling)
        generator = seeded_generator(torch, sampling, self._device)
        inputs = torch.tensor([ids], device=self._device)
        past = None
        with torch.inference_mode():
            for _ in range(max_new):
                out = self._model(input_ids=inputs, past_key_values=past, use_cache=True)
                past = out.past_key_values
                logits = out.logits[0, -1].float()
                if steps.active:  # on a CPU the same memory throughout; from a GPU, one row there and back
                    logits = torch.from_numpy(steps.adjust(logits.cpu().numpy())).to(logits.device)
                token = _pick(guide.mask_torch(logits) if guide else logits, sampling, generator)
                if token in self._eos:
                    return
                yield steps.chosen(token)
                if guide and guide.advance(token):
                    return  # the grammar is complete: the answer ends here ("stop")
                inputs = torch.tensor([[token]], device=self._device)

    def detokenize(self, ids: list[int]) -> str:
        return str(self._tokenizer.decode(ids, skip_special_tokens=True))

    def token_bytes(self, token: int) -> bytes:
        """A byte-level vocabulary's entry holds a token's exact bytes, half a character included."""
        exact = byte_level_bytes(str(self._tokenizer.convert_ids_to_tokens(token)))
        return exact if exact is not None else super().token_bytes(token)


def _pick(logits: Any, sampling: Sampling, generator: Any) -> int:
    """Greedy at temperature 0; otherwise temperature and nucleus (top_p) sampling."""
    import torch

    if sampling.greedy:
        return int(logits.argmax())
    probs = torch.softmax(logits / sampling.temperature, dim=-1)
    if sampling.top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        keep = sorted_probs.cumsum(-1) - sorted_probs < sampling.top_p
        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_probs[keep])
    return int(torch.multinomial(probs, 1, generator=generator))


class TorchEncoder(Wrappable, EmbeddingModel):
    engine_name = "torch"

    def __init__(self, model: Any, tokenizer: Any, device: str, window: int) -> None:
        self._model = model
        self._tokenizer = tokenizer
        self._device = device
        self.context_length = window
        self._window = Window(window, longest_token(tokenizer.get_vocab()))
        self._calls: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        self.compile_failure: str | None = None

    def compile(self, name: str, home: Path) -> None:
        """Run through torch.compile from now on, compiled here and now; eager again if that fails."""
        eager = self._model
        self._model = compiled(eager, home)
        self._calls = threading.Lock()  # one compiled call at a time: a recompile must not race another call

        def back() -> None:
            self._model, self._calls = eager, contextlib.nullcontext()

        self.compile_failure = warm_up(name, lambda: (self.embed(["warm up"] * 2), self.embed(["warm up"])), back)

    def embed(self, texts: list[str], truncate: bool = True) -> Embeddings:
        import torch

        texts, cut = self._window.cut(
            texts, lambda text: len(self._tokenizer(text, truncation=False, verbose=False)["input_ids"])
        )
        if not truncate:
            refuse_cut(cut, self.context_length)
        window = {"truncation": True, "max_length": self.context_length} if truncate else {"truncation": False}
        batch = self._tokenizer(texts, padding=True, return_tensors="pt", **window)
        lengths = batch["attention_mask"].sum(1).tolist()
        check_input_lengths(lengths, self.context_length)
        batch = batch.to(self._device)
        with self._calls, torch.inference_mode():
            hidden = self._model(**batch).last_hidden_state
            vectors = mean_pool_normalized(hidden, batch["attention_mask"])
        return Embeddings(vectors.float().cpu().numpy().astype(np.float32), int(sum(lengths)))
