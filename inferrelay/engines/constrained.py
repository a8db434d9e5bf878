"""Constrained decoding (response_format) for the local engines on one grammar library, llguidance, so a schema
means the same output whichever engine serves it: compiled once per request, then it masks each step's logits."""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from typing import Any

import numpy as np

from inferrelay.engines.base import Constraint
from inferrelay.engines.optional import require
from inferrelay.errors import ErrorKind, InferrelayError, bad_request

LLGUIDANCE = ("llguidance", "llguidance")
PARAM = "response_format"
ANY_OBJECT = {"type": "object"}


def grammar_text(constraint: Constraint) -> str:
    """llguidance's grammar for `constraint`, checked: one it refuses is the caller's error (400), never a 500."""
    llg = require(*LLGUIDANCE)
    if constraint.kind == "lark":
        if not isinstance(constraint.value, str) or not constraint.value.strip():
            raise bad_request("a lark constraint needs the grammar's text", PARAM)
        grammar = llg.LLMatcher.grammar_from_lark(constraint.value)
    elif constraint.kind in ("json_schema", "json_object"):
        schema = ANY_OBJECT if constraint.kind == "json_object" else constraint.value
        if not isinstance(schema, (dict, bool)):
            raise bad_request(f"a JSON schema is an object, not {type(schema).__name__}", PARAM)
        try:
            grammar = llg.LLMatcher.grammar_from_json_schema(schema)
        except ValueError as exc:
            raise bad_request(f"the JSON schema cannot be used: {exc}", PARAM) from exc
    else:
        raise bad_request(f"unknown constraint kind {constraint.kind!r}", PARAM)
    problem = llg.LLMatcher.validate_grammar(grammar)
    if problem and not problem.startswith("WARNING"):
        raise bad_request(f"the {_what(constraint)} cannot be enforced: {problem.strip()}", PARAM)
    return str(grammar)


def genai_guidance(constraint: Constraint) -> tuple[str, str]:
    """onnxruntime-genai's own llguidance (GeneratorParams.set_guidance): its type and text for `constraint`,
    checked here first so a refused schema gets the same 400 as on the other engines."""
    grammar_text(constraint)
    if constraint.kind == "lark":
        return "lark_grammar", str(constraint.value)
    schema = ANY_OBJECT if constraint.kind == "json_object" else constraint.value
    return "json_schema", json.dumps(schema)


def _what(constraint: Constraint) -> str:
    return "Lark grammar" if constraint.kind == "lark" else "JSON schema"


class TokenGuide:
    """One request's place in its grammar: which tokens may come next, and whether the output is complete."""

    def __init__(self, matcher: Any, n_logits: int) -> None:
        self._matcher = matcher
        self._n_logits = n_logits
        self._bits = np.full((n_logits + 31) // 32, -1, dtype=np.int32)

    def allowed(self) -> np.ndarray:
        """A boolean row the size of the logits: True where the grammar allows the token."""
        self._matcher.unsafe_compute_mask_ptr(self._bits.ctypes.data, self._bits.nbytes)
        self._check()
        allowed = np.unpackbits(self._bits.view(np.uint8), bitorder="little").view(bool)
        return allowed[: self._n_logits]

    def mask_numpy(self, logits: np.ndarray) -> np.ndarray:
        """`logits` (one row) with every token the grammar forbids at -inf, in place."""
        logits[~self.allowed()[: len(logits)]] = -np.inf
        return logits

    def mask_torch(self, logits: Any) -> Any:
        import torch

        allowed = torch.from_numpy(self.allowed()[: logits.shape[-1]]).to(logits.device)
        return logits.masked_fill_(~allowed, float("-inf"))

    def advance(self, token: int) -> bool:
        """Take the chosen token; True when the output is complete (nothing but the end may follow)."""
        self._matcher.consume_token(token)
        self._check()
        return bool(self._matcher.is_stopped())

    def llama_processor(self) -> Callable[[Any, np.ndarray], np.ndarray]:
        """A logits processor for llama-cpp-python (input ids, logits row in token order) -> the masked row."""
        return lambda _input_ids, scores: self.mask_numpy(scores)

    def _check(self) -> None:
        if self._matcher.is_error():
            raise InferrelayError(ErrorKind.INTERNAL, f"constrained decoding failed: {self._matcher.get_error()}")


class GuideMaker:
    """A loaded model's llguidance tokenizer, built on its first constrained request (about half a second),
    and the guide of each constrained request made from it."""

    def __init__(self, build_tokenizer: Callable[[], Any], n_logits: int) -> None:
        self._build = build_tokenizer
        self._tokenizer: Any = None
        self._n_logits = n_logits

    def start(self, constraint: Constraint | None) -> TokenGuide | None:
        if constraint is None:
            return None
        llg = require(*LLGUIDANCE)
        grammar = grammar_text(constraint)
        if self._tokenizer is None:
            self._tokenizer = self._build()
        matcher = llg.LLMatcher(self._tokenizer, grammar, log_level=0)
        if matcher.is_error():
            raise bad_request(f"the {_what(constraint)} cannot be enforced: {matcher.get_error()}", PARAM)
        return TokenGuide(matcher, self._n_logits)


def hf_tokenizer(tokenizer: Any, eos: Collection[int]) -> Callable[[], Any]:
    """The builder of llguidance's tokenizer from a transformers (fast) tokenizer, ending at any of `eos`."""

    def build() -> Any:
        require(*LLGUIDANCE)
        import llguidance.hf

        return llguidance.hf.from_tokenizer(tokenizer, eos_token=sorted(eos))

    return build


def llama_tokenizer(llm: Any, is_eog: Callable[[int], bool]) -> Callable[[], Any]:
    """The builder of llguidance's tokenizer from a llama-cpp-python model's own vocabulary (no transformers)."""

    def build() -> Any:
        require(*LLGUIDANCE)
        import llguidance.llamacpp

        eog = [token for token in range(llm.n_vocab()) if is_eog(token)]
        return llguidance.llamacpp.lltokenizer_from_vocab(llm._model.vocab, eos_token=eog or None)

    return build
