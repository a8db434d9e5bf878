"""llama.cpp through llama-cpp-python: GGUF files, chat template from the GGUF."""

from __future__ import annotations

import ctypes
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from inferrelay.config.schema import ModelSpec
from inferrelay.config.sources import resolve_source
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
from inferrelay.engines.chat_template import render_chat
from inferrelay.engines.constrained import GuideMaker, TokenGuide, llama_tokenizer
from inferrelay.engines.decoding import LogitSteps, check_input_lengths, refuse_cut
from inferrelay.engines.devices import choose_device
from inferrelay.engines.llamacpp_batch import BatchDecoder, BatchPlan
from inferrelay.engines.llamacpp_build import describe_installed
from inferrelay.engines.memory_rule import MIB, STORED, EngineMemory
from inferrelay.engines.optional import probe_imports, require
from inferrelay.engines.prompt_ids import chat_prompt_ids
from inferrelay.engines.token_bound import longest_piece
from inferrelay.engines.window import Window, longest_token
from inferrelay.errors import ErrorKind, InferrelayError

INSTALL = "'inferrelay[llamacpp]'  (llama-cpp-python)"
OWN_CONTEXT_WHEN_BATCHED = 256  # llama.cpp's smallest: the batched model's Llama only tokenizes


class LlamaCppEngine(Engine):
    name = "llamacpp"
    capabilities = frozenset({Capability.CHAT, Capability.COMPLETION, Capability.EMBEDDINGS})
    reads = frozenset({"gguf"})
    honours = frozenset({Feature.CONSTRAINT, Feature.LOGPROBS, Feature.PENALTIES})
    memory = EngineMemory(STORED, STORED, 2, 32 * MIB, 32 * MIB)  # the GGUF as stored; f16 KV cache by default
    default_for = frozenset({("gguf", "decoder")})
    preference = 10

    @classmethod
    def build(cls) -> str | None:
        return describe_installed()

    def crash_hint(self, signal_name: str) -> str:
        if signal_name == "SIGILL":
            return (
                "llama.cpp was built for instructions this CPU cannot run (a native build from another machine, or "
                "one that uses AVX-512/AMX this VM traps): rebuild it portable with `make clean && make test` "
                "(the Makefile's AVX2 baseline), or CMAKE_ARGS='-DGGML_NATIVE=OFF' pip install --no-cache-dir "
                "--force-reinstall llama-cpp-python (docs/engines.md, 'The llama.cpp build')"
            )
        return super().crash_hint(signal_name)

    @classmethod
    def kv_cells(cls, model: ModelSpec) -> int:
        """Batched, every sequence's cells, and the Llama's own small context beside them."""
        plan = BatchPlan.for_model(model.engine_options.get(cls.name, {}), model.context_length)
        return model.context_length if plan.parallel == 1 else plan.n_ctx + OWN_CONTEXT_WHEN_BATCHED

    def probe(self) -> ProbeResult:
        return probe_imports(("llama_cpp", INSTALL))

    def load(self, model: ModelSpec, device: str, home: Path) -> LoadedModel:
        llama_cpp = require("llama_cpp", INSTALL)
        source = resolve_source(model.source)
        if source.format != "gguf":
            raise InferrelayError(
                ErrorKind.MODEL_LOAD_FAILED, f"llama.cpp reads GGUF files; {source.path} is {source.format}"
            )
        embedding = model.is_encoder
        plan = None if embedding else BatchPlan.for_model(model.engine_options.get(self.name, {}), model.context_length)
        try:
            llm = llama_cpp.Llama(
                model_path=str(source.path),
                # batched, the Llama's own context serves no request: the batch decoder has its own
                n_ctx=model.context_length if plan is None or plan.parallel == 1 else OWN_CONTEXT_WHEN_BATCHED,
                n_threads=os.cpu_count() or 1,
                n_gpu_layers=-1 if choose_device(device) == "cuda" else 0,
                embedding=embedding,
                # an embedding input is one batch: llama.cpp would otherwise cut it at n_batch silently
                **({"n_batch": model.context_length, "n_ubatch": model.context_length} if embedding else {}),
                verbose=False,
            )
        except (ValueError, RuntimeError) as exc:  # llama-cpp-python's words for a file it cannot read
            raise InferrelayError(
                ErrorKind.MODEL_LOAD_FAILED, f"llama.cpp could not load {source.path}: {exc}"
            ) from exc
        return LlamaEmbeddingModel(llm, model) if plan is None else LlamaTextModel(llm, model, plan)


class LlamaTextModel(TokenTextModel):
    engine_name = "llamacpp"

    def __init__(self, llm: Any, spec: ModelSpec, plan: BatchPlan) -> None:
        self._llm = llm
        self.context_length = plan.slot_context
        self.parallel = plan.parallel
        self._template = llm.metadata.get("tokenizer.chat_template")
        self.bos_token = llm.token_bos()
        self.longest_token_bytes = longest_piece(_pieces(llm))
        self._is_eog = _eog_check(llm)
        self._guides = GuideMaker(llama_tokenizer(llm, self._is_eog), llm.n_vocab())
        self._clear_kv_cache = _kv_cache_clearer(llm)
        # parallel > 1: requests from several threads decoded together (docs/engines.md, "Continuous batching")
        self._batch = BatchDecoder(llm, plan, self._is_eog, self._guides, _processors) if plan.parallel > 1 else None

    def encode(self, request: GenerationRequest) -> list[int]:
        if request.messages is not None:
            if not self._template:
                raise InferrelayError(ErrorKind.BAD_REQUEST, "this GGUF carries no chat template; use /v1/completions")
            return chat_prompt_ids(self._render, request.messages, LlamaPromptTokenizer(self._llm))
        return list(self._llm.tokenize((request.prompt or "").encode(), add_bos=True, special=False))

    def _render(self, messages: list[dict[str, Any]]) -> str:
        bos, eos = self._token_text(self._llm.token_bos()), self._token_text(self._llm.token_eos())
        return render_chat(self._template, messages, bos_token=bos, eos_token=eos)

    def generate_ids(
        self, ids: list[int], max_new: int, sampling: Sampling, constraint: Constraint | None = None
    ) -> Iterator[int]:
        if self._batch is not None:
            yield from self._batch.generate_ids(ids, max_new, sampling, constraint)
            return
        guide = self._guides.start(constraint)
        steps = LogitSteps(sampling)
        # Without a seed each request draws afresh; llama.cpp would otherwise reuse its last seed.
        seed = sampling.seed_within(32)
        self._llm.set_seed(seed if seed is not None else random.randrange(2**32))
        self._start_from_scratch()
        tokens = self._llm.generate(
            ids,
            temp=sampling.temperature,
            top_p=sampling.top_p,
            top_k=0,
            min_p=0.0,
            repeat_penalty=1.0,
            logits_processor=_processors(steps, guide),
        )
        for produced, token in enumerate(tokens, start=1):
            if self._is_eog(token):
                return
            yield steps.chosen(token)
            if produced >= max_new or (guide and guide.advance(token)):
                return

    def _start_from_scratch(self) -> None:
        """Forget the previous request's tokens and KV cache, so the whole prompt is evaluated anew.

        llama-cpp-python would keep the longest prefix shared with the previous prompt and evaluate only the
        rest, in a batch of another size (one token for a repeated prompt), which changes the arithmetic: a
        repeated greedy request could get another answer than its first. docs/engines.md has the cost.
        """
        self._llm.reset()  # n_tokens = 0: `generate` finds no prefix to reuse
        self._clear_kv_cache()  # every cell free, the next one used the first, as in a new context

    def detokenize(self, ids: list[int]) -> str:
        return self._llm.detokenize(ids).decode("utf-8", errors="replace")

    def token_bytes(self, token: int) -> bytes:
        return bytes(self._llm.detokenize([token]))

    def _token_text(self, token: int) -> str:
        return "" if token < 0 else self._llm.detokenize([token], special=True).decode("utf-8", "replace")

    def close(self) -> None:
        if self._batch is not None:
            self._batch.close()
        self._llm.close()


def _pieces(llm: Any) -> Iterator[bytes]:
    """Each token's bytes, special ones as their text; not `detokenize`, whose 32-byte buffer drops longer pieces
    (SmolLM2 has tokens of 64 spaces)."""
    import llama_cpp

    vocab, size = llama_cpp.llama_model_get_vocab(llm.model), 256
    buffer = ctypes.create_string_buffer(size)
    for token in range(llm.n_vocab()):
        length = llama_cpp.llama_token_to_piece(vocab, token, buffer, size, 0, True)
        yield buffer.raw[:length] if length >= 0 else b"\0" * -length  # negative: the length it needs


class LlamaPromptTokenizer:
    """llama.cpp's tokenizer for engines/prompt_ids.py: `special=False` reads special-token text as text."""

    def __init__(self, llm: Any) -> None:
        self._llm = llm

    def with_special(self, text: str) -> list[int]:
        return list(self._llm.tokenize(text.encode(), add_bos=False, special=True))

    def as_text(self, text: str) -> list[int]:
        return list(self._llm.tokenize(text.encode(), add_bos=False, special=False))

    def control_text(self, token: int) -> str | None:
        """A control token renders as nothing unless special tokens are asked for."""
        if self._llm.detokenize([token], special=False):
            return None
        return str(self._llm.detokenize([token], special=True).decode("utf-8", "replace")) or None


class LlamaEmbeddingModel(EmbeddingModel):
    engine_name = "llamacpp"

    def __init__(self, llm: Any, spec: ModelSpec) -> None:
        self._llm = llm
        self.context_length = spec.context_length  # its n_batch: llama.cpp embeds an input in one batch
        self._specials = len(llm.tokenize(b"", add_bos=True))  # what tokenizing adds around a text (BOS, EOS)
        vocabulary = (llm.detokenize([token]).decode("utf-8", "replace") for token in range(llm.n_vocab()))
        self._window = Window(self.context_length, longest_token(vocabulary))

    def embed(self, texts: list[str], truncate: bool = True) -> Embeddings:
        texts, cut = self._window.cut(texts, self._count)
        if not truncate:
            refuse_cut(cut, self.context_length)
        tokens = [self._llm.tokenize(t.encode(), add_bos=True) for t in texts]
        if truncate:
            texts = [self._first_window(text, ids) for text, ids in zip(texts, tokens, strict=True)]
            tokens = [ids[: self.context_length] for ids in tokens]
        check_input_lengths([len(ids) for ids in tokens], self.context_length)
        vectors = np.asarray(self._llm.embed(texts, normalize=True, truncate=True), dtype=np.float32)
        return Embeddings(vectors, sum(len(ids) for ids in tokens))

    def _count(self, text: str) -> int:
        return len(self._llm.tokenize(text.encode(), add_bos=True))

    def _first_window(self, text: str, ids: list[int]) -> str:
        """The text of a long input's first window of tokens, with room left for the special tokens (llama.cpp
        embeds strings; its own truncation would cut the closing EOS)."""
        if len(ids) <= self.context_length:
            return text
        content = self._llm.tokenize(text.encode(), add_bos=False)[: self.context_length - self._specials]
        return str(self._llm.detokenize(content).decode("utf-8", "ignore"))

    def close(self) -> None:
        self._llm.close()


def _processors(steps: LogitSteps, guide: TokenGuide | None) -> list[Any] | None:
    """Llama.generate's logits processors, each given the step's raw logits row in token order: the shared
    steps first (log probabilities of the raw row, penalties), then the constraint's mask; None when neither."""
    processors = [lambda _ids, scores: steps.adjust(scores)] if steps.active else []
    if guide:
        processors.append(guide.llama_processor())
    return processors or None


def _eog_check(llm: Any) -> Any:
    import llama_cpp

    vocab = llm._model.vocab
    return lambda token: bool(llama_cpp.llama_vocab_is_eog(vocab, token))


def _kv_cache_clearer(llm: Any) -> Any:
    """Frees every KV cell (the metadata only: a freed cell's stale values are masked out, never read)."""
    import llama_cpp

    memory = llama_cpp.llama_get_memory(llm.ctx)
    return lambda: llama_cpp.llama_memory_clear(memory, False)
