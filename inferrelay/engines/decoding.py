"""Engine-independent decoding steps: token budget, incremental text, stop strings."""

from __future__ import annotations

from collections.abc import Callable

from inferrelay.errors import ErrorKind, InferrelayError

DEFAULT_MAX_TOKENS = 512
"""Answer length when the caller gives no max_tokens (documented in docs/api.md)."""


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
    """An embedding input past the model's window; `index` is its place in the batch given."""

    def __init__(self, index: int, length: int, limit: int) -> None:
        super().__init__(
            ErrorKind.CONTEXT_LENGTH,
            f"input[{index}] has {length} tokens; this model takes at most {limit}",
            param="input",
        )
        self.index, self.length, self.limit = index, length, limit


def check_input_lengths(lengths: list[int], context_length: int) -> None:
    """Embedding inputs past the model's window are refused, as OpenAI does, not cut silently."""
    for index, length in enumerate(lengths):
        if length > context_length:
            raise InputTooLong(index, length, context_length)


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
