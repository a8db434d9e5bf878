"""ONNX Runtime: onnxruntime for encoders, onnxruntime-genai for decoders.

The ONNX files are exported from the model's own source on first use and
cached under $INFERRELAY_HOME/cache, keyed by the source's hash.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from inferrelay.config.schema import ModelSpec
from inferrelay.config.sources import ModelSource, resolve_source
from inferrelay.engines.artifacts import cached_artifact
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
from inferrelay.engines.constrained import PARAM, genai_guidance
from inferrelay.engines.decoding import LogitSteps, byte_level_bytes, check_input_lengths, refuse_cut
from inferrelay.engines.devices import choose_device
from inferrelay.engines.memory_rule import DTYPE, MIB, EngineMemory
from inferrelay.engines.onnx_export import DECODER_PRECISION, ENCODER_VERSION
from inferrelay.engines.optional import probe_imports, require
from inferrelay.engines.prompt_ids import chat_prompt_ids
from inferrelay.engines.token_bound import longest_entry
from inferrelay.engines.window import Window, longest_token, window_of
from inferrelay.errors import ErrorKind, InferrelayError, bad_request, dependency_missing

RUNTIME = ("onnxruntime", "'inferrelay[onnx]'  (onnxruntime)")
GENAI = ("onnxruntime_genai", "'inferrelay[onnx]'  (onnxruntime-genai)")
TOKENIZERS = ("tokenizers", "'inferrelay[onnx]'  (tokenizers)")
EXPORT_TIMEOUT_S = 1800


class OnnxEngine(Engine):
    name = "onnx"
    capabilities = frozenset({Capability.CHAT, Capability.COMPLETION, Capability.EMBEDDINGS})
    reads = frozenset({"gguf", "hf_folder", "sentence_transformers", "onnx"})
    honours = frozenset({Feature.CONSTRAINT, Feature.LOGPROBS, Feature.PENALTIES})
    memory = EngineMemory(1, DTYPE, 4, 64 * MIB, 32 * MIB)  # int8 decoder exports; encoders fp32, or int8 on request
    precision_steps = (("encoder", "float32", "int8"),)  # int8 weights; the decoder exports are int8 already
    default_for = frozenset(
        {
            ("gguf", "decoder"),
            ("hf_folder", "decoder"),
            ("hf_folder", "encoder"),
            ("sentence_transformers", "encoder"),
            ("onnx", "encoder"),
        }
    )
    preference = 20

    def probe(self) -> ProbeResult:
        return probe_imports(RUNTIME, GENAI, TOKENIZERS)

    def load(self, model: ModelSpec, device: str, home: Path) -> LoadedModel:
        source = resolve_source(model.source)
        if model.is_encoder:
            precision = "int8" if model.dtype == "int8" else "fp32"
            folder = _export(home, "encoder", source, "--precision", precision, version=ENCODER_VERSION)
            return OnnxEncoder(folder, model, choose_device(device))
        folder = _export(home, "decoder", source, "--precision", DECODER_PRECISION)
        return GenAIDecoder(folder, model)


def _export(home: Path, what: str, source: ModelSource, *options: str, version: str = "") -> Path:
    """The cached ONNX `what` (encoder or decoder) of `source`, exported in a subprocess on first use.

    The cache's name holds the options and the exporter's version: a changed export is a new folder.
    """
    if source.format == "onnx":
        return source.folder
    kind = f"onnx-{what}{version and '-' + version}" + "".join(f"-{o}" for o in options if not o.startswith("--"))

    def build(out: Path) -> None:
        command = [sys.executable, "-m", "inferrelay.engines.onnx_export", what, str(source.path), str(out), *options]
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        try:
            done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=EXPORT_TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            raise InferrelayError(
                ErrorKind.TIMEOUT, f"ONNX export of {source.path} took over {EXPORT_TIMEOUT_S}s and was stopped"
            ) from exc
        if done.returncode != 0:
            raise _export_failure(source, done.stderr)

    return cached_artifact(home, kind, source, build)


def _providers(device: str) -> list[str]:
    return ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]


def _export_failure(source: ModelSource, stderr: str) -> InferrelayError:
    """The export needs torch and transformers: their absence is a missing dependency, not a bad model."""
    missing = re.search(r"ModuleNotFoundError: No module named '([\w.]+)'", stderr)
    if missing:
        module = missing.group(1).split(".")[0]
        return dependency_missing(module, "'inferrelay[torch]'", f"the ONNX export of {source.path} needs it")
    tail = " | ".join(stderr.strip().splitlines()[-3:])
    return InferrelayError(ErrorKind.MODEL_LOAD_FAILED, f"ONNX export of {source.path} failed: {tail}")


class OnnxEncoder(EmbeddingModel):
    engine_name = "onnx"

    def __init__(self, folder: Path, spec: ModelSpec, device: str) -> None:
        ort = require(*RUNTIME)
        tokenizers = require(*TOKENIZERS)
        options = ort.SessionOptions()
        options.intra_op_num_threads = os.cpu_count() or 1
        # Idle worker threads sleep instead of spinning: spinning threads take the cores the server, the other
        # models and the next request need (measured: about 2x the embeddings/s over HTTP on 2 cores). A process
        # that does nothing else, a batch job's, sets `spin` (batch/model.py): +6.7% sentences/s on 2 cores.
        spin = bool(spec.engine_options.get("onnx", {}).get("spin", False))
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        try:
            self._session = ort.InferenceSession(str(folder / "model.onnx"), options, providers=_providers(device))
        except Exception as exc:
            raise InferrelayError(
                ErrorKind.MODEL_LOAD_FAILED,
                f"onnxruntime could not load {folder / 'model.onnx'}: {exc}",
                hint=f"the cached export is damaged: delete {folder} and it is rebuilt on next use",
            ) from exc
        self.context_length = window_of(folder, spec.context_length)
        self._tokenizer = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
        self._tokenizer.no_truncation()
        self._tokenizer.enable_padding()
        self._truncating = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
        self._truncating.enable_truncation(self.context_length)
        self._truncating.enable_padding()
        self._window = Window(self.context_length, longest_token(self._tokenizer.get_vocab()))

    def embed(self, texts: list[str], truncate: bool = True) -> Embeddings:
        texts, cut = self._window.cut(texts, lambda text: len(self._tokenizer.encode(text)))
        if not truncate:
            refuse_cut(cut, self.context_length)
        encodings = (self._truncating if truncate else self._tokenizer).encode_batch(texts)
        lengths = [sum(e.attention_mask) for e in encodings]
        check_input_lengths(lengths, self.context_length)
        feed = {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }
        (vectors,) = self._session.run(["embedding"], feed)
        return Embeddings(vectors.astype(np.float32, copy=False), sum(lengths))


DEFAULT_PARALLEL = 4
"""Concurrent requests a genai decoder runs at once (`engine_options.onnx.parallel`)."""


class GenAIDecoder(TokenTextModel):
    engine_name = "onnx"

    def __init__(self, folder: Path, spec: ModelSpec) -> None:
        self._og = require(*GENAI)
        try:
            self._model = self._og.Model(str(folder))
        except Exception as exc:
            raise InferrelayError(
                ErrorKind.MODEL_LOAD_FAILED,
                f"onnxruntime-genai could not load {folder}: {exc}",
                hint=f"the cached export is damaged: delete {folder} and it is rebuilt on next use",
            ) from exc
        self._tokenizer = self._og.Tokenizer(self._model)
        vocabulary = folder / "tokenizer.json"
        self._vocabulary = require(*TOKENIZERS).Tokenizer.from_file(str(vocabulary)) if vocabulary.exists() else None
        self._text = self._vocabulary and GenAIPromptTokenizer(self._vocabulary, self._text_with_special)
        if self._vocabulary is not None:
            self.longest_token_bytes = longest_entry(self._vocabulary.get_vocab(with_added_tokens=True))
        config = json.loads((folder / "genai_config.json").read_text())["model"]
        eos = config.get("eos_token_id", [])
        self.bos_token = config.get("bos_token_id")
        self._eos = set(eos if isinstance(eos, list) else [eos])
        self.context_length = min(spec.context_length, int(config.get("context_length", spec.context_length)))
        # genai runs several generators on one model, each with its own state: concurrent requests interleave
        # step by step instead of waiting whole (not batched: docs/engines.md)
        self.parallel = max(1, int(spec.engine_options.get("onnx", {}).get("parallel", DEFAULT_PARALLEL)))

    def encode(self, request: GenerationRequest) -> list[int]:
        if self._text is None:  # no tokenizer.json beside the export: genai's tokenizer reads special-token text
            text = self._render(request.messages) if request.messages is not None else request.prompt or ""
            return self._text_with_special(text)
        if request.messages is not None:
            return chat_prompt_ids(self._render, request.messages, self._text)
        return self._text.prompt(request.prompt or "")

    def _render(self, messages: list[dict[str, Any]]) -> str:
        with template_errors():
            return str(self._tokenizer.apply_chat_template(json.dumps(messages), add_generation_prompt=True))

    def _text_with_special(self, text: str) -> list[int]:
        return [int(t) for t in self._tokenizer.encode(text)]

    def generate_ids(
        self, ids: list[int], max_new: int, sampling: Sampling, constraint: Constraint | None = None
    ) -> Iterator[int]:
        params = self._og.GeneratorParams(self._model)
        options: dict[str, Any] = {"max_length": len(ids) + max_new, "do_sample": not sampling.greedy}
        if not sampling.greedy:
            options |= {"temperature": sampling.temperature, "top_p": sampling.top_p, "top_k": 0}
        if sampling.seed is not None:
            options["random_seed"] = sampling.seed_within(31)
        params.set_search_options(**options)
        generator = self._generator(params, constraint)
        generator.append_tokens(ids)
        steps = LogitSteps(sampling)
        while not generator.is_done():
            if steps.active:  # the raw row out, penalized back in; genai's guidance and sampling come after
                logits = generator.get_logits()
                generator.set_logits(steps.adjust(logits.reshape(-1)).reshape(logits.shape))
            generator.generate_next_token()
            token = int(generator.get_next_tokens()[0])
            if token in self._eos:
                return
            yield steps.chosen(token)

    def _generator(self, params: Any, constraint: Constraint | None) -> Any:
        """genai's generator, with its own llguidance masking each step and ending at the grammar's end."""
        if constraint is None:
            return self._og.Generator(self._model, params)
        if not hasattr(params, "set_guidance"):
            raise dependency_missing("onnxruntime_genai", "'onnxruntime-genai>=0.18'", "this one has no set_guidance")
        params.set_guidance(*genai_guidance(constraint))
        try:
            return self._og.Generator(self._model, params)
        except RuntimeError as exc:  # checked by llguidance already; genai's own copy may still disagree
            if "grammar" not in str(exc).lower():
                raise
            raise bad_request(f"the constraint cannot be enforced: {exc}", PARAM) from exc

    def detokenize(self, ids: list[int]) -> str:
        return str(self._tokenizer.decode(np.asarray(ids, dtype=np.int32)))

    def token_bytes(self, token: int) -> bytes:
        """A byte-level vocabulary's entry (tokenizer.json beside the export) holds a token's exact bytes."""
        entry = self._vocabulary.id_to_token(token) if self._vocabulary is not None else None
        exact = byte_level_bytes(entry) if entry is not None else None
        return exact if exact is not None else super().token_bytes(token)


class GenAIPromptTokenizer:
    """genai's own tokenizer for the template's text; the same tokenizer.json, read with `tokenizers`, for caller
    text with special-token text as text (genai's tokenizer has no such switch)."""

    def __init__(self, vocabulary: Any, with_special: Callable[[str], list[int]]) -> None:
        self._vocabulary = vocabulary
        self._vocabulary.encode_special_tokens = True
        self.with_special = with_special
        self._controls = {i: t.content for i, t in vocabulary.get_added_tokens_decoder().items() if t.special}

    def as_text(self, text: str) -> list[int]:
        return [int(t) for t in self._vocabulary.encode(text, add_special_tokens=False).ids]

    def control_text(self, token: int) -> str | None:
        return self._controls.get(token)

    def prompt(self, text: str) -> list[int]:
        """A completion's prompt, with what tokenizer.json's post-processor adds (a BOS), as genai's encode does."""
        return [int(t) for t in self._vocabulary.encode(text, add_special_tokens=True).ids]
