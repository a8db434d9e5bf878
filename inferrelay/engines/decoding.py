"""Engine-independent decoding steps: token budget, incremental text, stop strings, and what each step does to
the logits (penalties) and records of them (log probabilities), the same in every local engine."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from inferrelay.errors import ErrorKind, InferrelayError

DEFAULT_MAX_TOKENS = 512
"""Answer length when the caller gives no max_tokens (documented in docs/api.md)."""


@dataclass(frozen=True)
class Sampling:
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    presence_penalty: float = 0.0  # OpenAI's: subtracted once from a token generated already
    frequency_penalty: float = 0.0  # OpenAI's: subtracted per time a token was generated already
    logprobs: int | None = None
    """Record each chosen token's log probability and this many likeliest alternatives; None: record none."""

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def seed_within(self, bits: int) -> int | None:
        """The seed folded into an engine's narrower range (llama.cpp: 32 bits, genai: 31)."""
        return None if self.seed is None else self.seed % (1 << bits)


def plan_max_tokens(prompt_tokens: int, max_tokens: int | None, context_length: int, param: str = "messages") -> int:
    """How many tokens may be generated; a prompt or budget past the context is the caller's error."""
    room = context_length - prompt_tokens
    if room <= 0:
        raise InferrelayError(
            ErrorKind.CONTEXT_LENGTH,
            f"This model's maximum context length is {context_length} tokens, "
            f"but the prompt has {prompt_tokens} tokens.",
            param=param,
        )
    if max_tokens is None:
        return min(room, DEFAULT_MAX_TOKENS)
    if max_tokens > room:
        raise InferrelayError(
            ErrorKind.CONTEXT_LENGTH,
            f"This model's maximum context length is {context_length} tokens; the prompt has "
            f"{prompt_tokens} tokens and max_tokens asks for {max_tokens} more.",
            param="max_tokens",
        )
    return max_tokens


class InputTooLong(InferrelayError):
    """An embedding input past the model's window; `index` is its place in the batch given. `length` None: a
    text too long to count whole (engines/window.py), known only to be over."""

    def __init__(self, index: int, length: int | None, limit: int) -> None:
        counted = f"more than {limit}" if length is None else str(length)
        super().__init__(
            ErrorKind.CONTEXT_LENGTH,
            f"input[{index}] has {counted} tokens; this model takes at most {limit} "
            "(send truncate: true to embed its first tokens)",
            param="input",
        )
        self.index, self.length, self.limit = index, length, limit


def check_input_lengths(lengths: list[int], context_length: int) -> None:
    """Embedding inputs past the model's window, when the caller asked not to truncate, are refused."""
    for index, length in enumerate(lengths):
        if length > context_length:
            raise InputTooLong(index, length, context_length)


def refuse_cut(cut: set[int], context_length: int) -> None:
    """Refuse the first input that was too long to count whole (engines/window.py's cut)."""
    if cut:
        raise InputTooLong(min(cut), None, context_length)


class IncrementalDetokenizer:
    """Turns a growing list of token ids into text pieces without splitting a character.

    Only a short window is decoded each step (the tokens since the last emitted
    piece, after a few tokens of context), so the cost stays linear and a
    tokenizer that tidies spaces across tokens cannot rewrite text already sent.
    """

    def __init__(self, detokenize: Callable[[list[int]], str]) -> None:
        self._detokenize = detokenize
        self._ids: list[int] = []
        self._prefix = 0  # start of the context window
        self._read = 0  # end of what has been emitted

    def push(self, token: int) -> str:
        self._ids.append(token)
        return self._advance(final=False)

    def flush(self) -> str:
        return self._advance(final=True)

    def _advance(self, final: bool) -> str:
        before = self._detokenize(self._ids[self._prefix : self._read])
        after = self._detokenize(self._ids[self._prefix :])
        if len(after) <= len(before) or (after.endswith("\ufffd") and not final):
            return ""  # nothing new, or an incomplete UTF-8 sequence: wait for the next token
        self._prefix, self._read = self._read, len(self._ids)
        return after[len(before) :]


class StopScanner:
    """Cuts the output at the first stop string, holding back text that may start one."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._held = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """Return the text safe to emit and whether a stop string was reached."""
        if not self._stops:
            return text, False
        buffer = self._held + text
        cut = min((i for i in (buffer.find(s) for s in self._stops) if i >= 0), default=-1)
        if cut >= 0:
            self._held = ""
            return buffer[:cut], True
        keep = max((_overlap(buffer, s) for s in self._stops), default=0)
        self._held = buffer[len(buffer) - keep :] if keep else ""
        return buffer[: len(buffer) - keep], False

    def flush(self) -> str:
        held, self._held = self._held, ""
        return held


def _overlap(text: str, stop: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `stop`."""
    for size in range(min(len(text), len(stop) - 1), 0, -1):
        if stop.startswith(text[-size:]):
            return size
    return 0


class ScoredToken(int):
    """A chosen token id that carries its log probability under the model and the likeliest alternatives
    ((id, log probability), most likely first): what `generate_ids` yields when logprobs are asked for."""

    logprob: float
    top: tuple[tuple[int, float], ...]

    def __new__(cls, token: int, logprob: float, top: tuple[tuple[int, float], ...]) -> ScoredToken:
        scored = super().__new__(cls, token)
        scored.logprob, scored.top = logprob, top
        return scored


class LogitSteps:
    """One request's work on each step's logits, shared by the engines so that they agree: the log probabilities
    are read from the model's own distribution (the raw logits' log-softmax, before penalties, temperature, top_p
    or a constraint's mask), then OpenAI's penalties are subtracted over the tokens generated so far."""

    def __init__(self, sampling: Sampling) -> None:
        self._presence = sampling.presence_penalty
        self._frequency = sampling.frequency_penalty
        self._top = sampling.logprobs
        self._counts: Counter[int] = Counter()
        self._raw: np.ndarray | None = None
        self._norm = 0.0

    @property
    def active(self) -> bool:
        """Whether the logits need reading at all; when not, an engine can leave them where they are."""
        return self._top is not None or bool(self._presence or self._frequency)

    def adjust(self, logits: np.ndarray) -> np.ndarray:
        """One step's logits (a float row in token order): recorded when logprobs are asked for, then penalized,
        in place."""
        if self._top is not None:
            self._raw = np.array(logits, dtype=np.float32)
            high = float(self._raw.max())
            self._norm = high + float(np.log(np.exp(self._raw.astype(np.float64) - high).sum()))
        if self._counts and (self._presence or self._frequency):
            ids = np.fromiter(self._counts.keys(), dtype=np.int64)
            counts = np.fromiter(self._counts.values(), dtype=np.float64)
            logits[ids] -= (self._presence + self._frequency * counts).astype(logits.dtype)
        return logits

    def chosen(self, token: int) -> int:
        """The token the engine picked, counted for the penalties; a ScoredToken when logprobs are asked for."""
        self._counts[token] += 1
        if self._top is None or self._raw is None:
            return token
        raw, norm = self._raw, self._norm
        top: tuple[tuple[int, float], ...] = ()
        if self._top:
            k = min(self._top, len(raw))
            best = np.argpartition(-raw, k - 1)[:k]
            best = best[np.lexsort((best, -raw[best]))]  # most likely first, ties by id: the same every time
            top = tuple((int(i), float(raw[i]) - norm) for i in best)
        return ScoredToken(token, float(raw[token]) - norm, top)


@dataclass(frozen=True)
class TokenLogprob:
    """A token's text, bytes and log probability, with its step's likeliest alternatives (OpenAI's logprobs)."""

    token: str
    bytes: bytes
    logprob: float
    top: tuple[TokenLogprob, ...] = ()


class LogprobsByPiece:
    """Token log probabilities held until the text they made is sent, so that each piece carries its own
    tokens' (a token whose text is held back, half a character or a possible stop string, waits)."""

    def __init__(self, wanted: bool, token_bytes: Callable[[int], bytes]) -> None:
        self._wanted = wanted
        self._bytes = token_bytes
        self._held: list[TokenLogprob] = []

    def add(self, token: int) -> None:
        if self._wanted and isinstance(token, ScoredToken):
            top = tuple(self._describe(i, logprob) for i, logprob in token.top)
            self._held.append(self._describe(token, token.logprob, top))

    def take(self) -> list[TokenLogprob] | None:
        """The held records, now sent; None when the request did not ask for logprobs."""
        if not self._wanted:
            return None
        held, self._held = self._held, []
        return held

    def _describe(self, token: int, logprob: float, top: tuple[TokenLogprob, ...] = ()) -> TokenLogprob:
        raw = self._bytes(int(token))
        return TokenLogprob(raw.decode("utf-8", errors="replace"), raw, logprob, top)


def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's byte-level BPE alphabet: the printable character that stands for each byte in a vocabulary."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            chars[chr(byte)] = byte
        else:
            chars[chr(256 + extra)] = byte
            extra += 1
    return chars


BYTE_LEVEL = _byte_level_alphabet()


def byte_level_bytes(vocabulary_entry: str) -> bytes | None:
    """The bytes a byte-level BPE vocabulary entry ("Ġthe") stands for; None when it is not byte-level (a
    SentencePiece "▁the", a special token's name is still read as bytes, which is harmless)."""
    if not all(c in BYTE_LEVEL for c in vocabulary_entry):
        return None
    return bytes(BYTE_LEVEL[c] for c in vocabulary_entry)
