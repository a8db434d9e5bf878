"""The engine contract: a name, capabilities, `probe()` and `load()`.

An engine runs a model and nothing more; batching, retries and fallback live
in routing/. A loaded text model implements three small steps (encode the
prompt, generate token ids, detokenize) and inherits streaming, stop strings,
context checks and usage counting from `TextModel`.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from inferrelay import cancellation
from inferrelay.capabilities import Capability
from inferrelay.engines.decoding import (
    IncrementalDetokenizer,
    LogprobsByPiece,
    Sampling,
    StopScanner,
    TokenLogprob,
    plan_max_tokens,
)
from inferrelay.engines.memory_rule import AS_STORED, EngineMemory
from inferrelay.engines.token_bound import UNKNOWN, prompt_texts, refuse_surely_over
from inferrelay.errors import bad_request

if TYPE_CHECKING:
    from pathlib import Path

    from inferrelay.config.schema import ModelSpec
    from inferrelay.errors import InferrelayError


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class ProbeResult:
    available: bool
    reason: str
    checked_at: datetime = field(default_factory=utcnow)
    error: InferrelayError | None = None


@dataclass(frozen=True)
class Constraint:
    """What the output must be, enforced token by token (constrained decoding): a JSON schema, any JSON object,
    or a Lark grammar (llguidance's dialect). Engines that can enforce it say so with Feature.CONSTRAINT."""

    kind: Literal["json_schema", "json_object", "lark"]
    value: Any = None  # the schema (a dict) for json_schema, the grammar text for lark, None for json_object


class Feature(str, Enum):
    """What a request may need beyond plain text; each engine declares which it honours (Engine.honours)."""

    CONSTRAINT = "constraint"  # constrained decoding: response_format, and tool calls built on it
    LOGPROBS = "logprobs"  # each chosen token's log probability and the likeliest alternatives (Sampling.logprobs)
    PENALTIES = "penalties"  # presence_penalty and frequency_penalty over the tokens generated


@dataclass(frozen=True)
class GenerationRequest:
    """A chat (messages) or completion (prompt) request, already validated."""

    messages: list[dict[str, Any]] | None = None
    prompt: str | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    sampling: Sampling = field(default_factory=Sampling)
    constraint: Constraint | None = None


@dataclass
class Piece:
    """One streamed piece of text; the last one carries finish_reason and usage."""

    text: str
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    logprobs: list[TokenLogprob] | None = None
    """The log probabilities of the tokens that made `text`, when the request asked for them; else None."""


@dataclass(frozen=True)
class Embeddings:
    vectors: np.ndarray
    prompt_tokens: int


class LoadedModel(abc.ABC):
    engine_name: str
    context_length: int
    parallel: int = 1
    """How many calls it can run at once (from several threads); a batching engine's model says more."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release what the model holds; the default holds nothing special."""


class TextModel(LoadedModel):
    """A loaded decoder. `stream` is the contract; `generate` collects it."""

    @abc.abstractmethod
    def stream(self, request: GenerationRequest) -> Iterator[Piece]:
        """Text pieces; the last one carries finish_reason and usage."""

    def generate(self, request: GenerationRequest) -> Piece:
        """The pieces collected; a cancelled call (its caller gone, its deadline passed) stops at the next one."""
        parts: list[str] = []
        logprobs: list[TokenLogprob] | None = None
        last = Piece("")
        pieces = self.stream(request)
        try:
            for piece in pieces:
                cancellation.check()
                parts.append(piece.text)
                if piece.logprobs is not None:
                    logprobs = [*(logprobs or []), *piece.logprobs]
                last = piece
        finally:  # a generator stopped early frees what it holds now (a batched sequence's cells)
            close = getattr(pieces, "close", None)
            if close is not None:
                close()
        return Piece("".join(parts), last.finish_reason, last.prompt_tokens, last.completion_tokens, logprobs)


class TokenTextModel(TextModel):
    """A decoder driven token by token here: engines give three steps and inherit stop
    strings, context checks, incremental text and usage counting."""

    bos_token: int | None = None
    """The beginning-of-sequence token an empty prompt starts from; None: the model has none."""

    longest_token_bytes: int = UNKNOWN
    """The most bytes one token stands for (engines/token_bound.py); UNKNOWN: every prompt is counted whole."""

    @abc.abstractmethod
    def encode(self, request: GenerationRequest) -> list[int]:
        """Prompt token ids: the chat template from the model applied, then tokenized."""

    @abc.abstractmethod
    def generate_ids(self, ids: list[int], max_new: int, sampling: Sampling) -> Iterator[int]:
        """New token ids, ending early (without yielding it) at an end-of-generation token. An engine that
        honours Feature.CONSTRAINT also takes `constraint` (keeping to it, ending when it is complete); the
        walk sends a constrained request to no other, and `stream` passes it only when there is one. One that
        honours Feature.LOGPROBS or PENALTIES runs each step's logits through decoding.LogitSteps, and yields
        its ScoredTokens when `sampling.logprobs` asks for them."""

    @abc.abstractmethod
    def detokenize(self, ids: list[int]) -> str: ...

    def token_bytes(self, token: int) -> bytes:
        """The bytes of one token, for its log probability's record; engines that can say better override it."""
        return self.detokenize([token]).encode()

    def stream(self, request: GenerationRequest) -> Iterator[Piece]:
        param = "messages" if request.messages is not None else "prompt"
        texts = prompt_texts(request.prompt, request.messages)
        refuse_surely_over(texts, self.longest_token_bytes, self.context_length, param)  # before counting millions
        ids = self.encode(request) or self._start_of_text(param)
        max_new = plan_max_tokens(len(ids), request.max_tokens, self.context_length, param)
        text = IncrementalDetokenizer(self.detokenize)
        stops = StopScanner(request.stop)
        logprobs = LogprobsByPiece(request.sampling.logprobs is not None, self.token_bytes)
        count = 0
        stopped = False
        if request.constraint is None:
            tokens = self.generate_ids(ids, max_new, request.sampling)
        else:
            tokens = self.generate_ids(ids, max_new, request.sampling, request.constraint)  # type: ignore[call-arg]
        for token in tokens:
            count += 1
            logprobs.add(token)
            piece, stopped = stops.feed(text.push(token))
            if piece:
                yield Piece(piece, logprobs=logprobs.take())
            if stopped:
                break
        if not stopped:
            tail, stopped = stops.feed(text.flush())
            rest = tail if stopped else tail + stops.flush()
            if rest:
                yield Piece(rest, logprobs=logprobs.take())
        finish = "stop" if stopped or count < max_new else "length"
        yield Piece("", finish, len(ids), count, logprobs.take())  # any tokens that made no text of their own

    def _start_of_text(self, param: str) -> list[int]:
        """An empty prompt is generated from the start of a text (the BOS token), as OpenAI answers one."""
        if self.bos_token is None or self.bos_token < 0:
            raise bad_request(f"{param} is empty, and this model has no start-of-text token to begin from", param)
        return [self.bos_token]


class EmbeddingModel(LoadedModel):
    @abc.abstractmethod
    def embed(self, texts: list[str], truncate: bool = True) -> Embeddings:
        """L2-normalised float32 vectors, one row per text. A text past the model's window is cut to it
        (engines/window.py), or refused as decoding.InputTooLong when `truncate` is False."""


class Engine(abc.ABC):
    """A local engine. Subclasses register under the `inferrelay.engines` entry points."""

    name: ClassVar[str]
    capabilities: ClassVar[frozenset[Capability]]
    reads: ClassVar[frozenset[str]] = frozenset()
    """The source formats it loads (gguf, hf_folder, sentence_transformers, onnx): what the doctor matches."""
    honours: ClassVar[frozenset[Feature]] = frozenset()
    """What it can do beyond plain text; a request that needs more skips it (attempt kind `unsupported`)."""
    isolation: ClassVar[str] = "process"
    """"process": each loaded model runs in a supervised worker process (runtime/workers.py); "in_process": in
    the server's own process, for engines with no native code to crash (a model can ask either way)."""
    memory: ClassVar[EngineMemory] = AS_STORED
    """How it holds a model (weights, KV cache, allowances): what runtime/memory.py's estimate applies."""
    precision_steps: ClassVar[tuple[tuple[str, str, str], ...]] = ()
    """("decoder" or "encoder", a dtype it runs such a model in, the lower one it can run it in instead): the
    out-of-memory ladder's lower-precision step; none: it has no lower step."""
    default_for: ClassVar[frozenset[tuple[str, str]]] = frozenset()
    """(format, "decoder" or "encoder") it joins a chain the server fills in itself for (a model registered
    with no engines); none: it serves only in chains that name it."""
    preference: ClassVar[int] = 100
    """Its place in such a chain, lowest first (built-ins: the fastest on a CPU first); a plugin goes last."""

    @abc.abstractmethod
    def probe(self) -> ProbeResult:
        """Whether this engine can run here, and why not; cheap and side-effect free."""

    @abc.abstractmethod
    def load(self, model: ModelSpec, device: str, home: Path) -> LoadedModel:
        """Load `model` on `device`; derived artifacts go under `home`/cache."""

    @classmethod
    def lower_precision(cls, is_encoder: bool, dtype: str) -> str | None:
        """The dtype one step below `dtype` this engine can run the model in; None when there is none."""
        role = "encoder" if is_encoder else "decoder"
        return next((lower for kind, higher, lower in cls.precision_steps if (kind, higher) == (role, dtype)), None)

    @classmethod
    def chosen_by_default(cls, format: str, is_encoder: bool) -> bool:
        """Whether it joins the chain the server fills in for a model of `format` registered with no engines."""
        return (format, "encoder" if is_encoder else "decoder") in cls.default_for

    @classmethod
    def kv_cells(cls, model: ModelSpec) -> int:
        """The KV cache cells a loaded decoder holds (what the memory estimate charges): its context, unless the
        engine keeps several sequences' contexts at once."""
        return model.context_length

    @classmethod
    def build(cls) -> str | None:
        """How its library was compiled, where speed and safety depend on it (llama.cpp's CPU tier); else None."""
        return None

    def smoke_test(self, model: LoadedModel) -> None:
        """Run the loaded model once, in its worker, before it serves: a build that crashes on this machine
        crashes here, where it costs one token, not a caller's request."""
        if isinstance(model, TextModel):
            model.generate(GenerationRequest(prompt="Hello", max_tokens=1, sampling=Sampling(temperature=0.0)))
        elif isinstance(model, EmbeddingModel):
            model.embed(["Hello"])

    def crash_hint(self, signal_name: str) -> str:
        """What a person can do when this engine's worker dies of `signal_name` (a name like SIGILL, or 'exit')."""
        if signal_name == "SIGILL":
            return (
                f"the {self.name} library was built for instructions this CPU cannot run: reinstall it built "
                "for this machine's baseline (docs/engines.md)"
            )
        if signal_name == "SIGKILL":
            return "killed from outside, often by the kernel's OOM killer: free memory or lower the memory budget"
        return f"the {self.name} library crashed in native code; the server's log has the worker's last words"
