"""A prompt surely past the model's context is refused before it is tokenized (issue 20).

No token stands for more text than the vocabulary's longest one, so a prompt of B UTF-8 bytes makes at least
B / longest tokens. Where that bound alone is past the context, counting millions of tokens to say so is waste:
the refusal is the same 400 `context_length_exceeded`, in milliseconds. Near the limit the exact count decides.
The bound holds for tokenizers that drop no text (byte-level BPE, SentencePiece: the decoders served here).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from inferrelay.engines.decoding import byte_level_bytes
from inferrelay.errors import ErrorKind, InferrelayError

UNKNOWN = 0
"""A longest token of 0: no bound, the prompt is always counted."""


def fewest_tokens(texts: Iterable[str], longest_token_bytes: int) -> int:
    """The fewest tokens any tokenization of a prompt holding `texts` can have, when no token stands for more
    bytes than given."""
    size = sum(len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass")) for text in texts)
    return -(-size // max(1, longest_token_bytes))


def prompt_texts(prompt: str | None, messages: list[dict[str, Any]] | None) -> list[str]:
    """What a prompt surely holds: the completion prompt, or every message's text (the template adds more)."""
    if messages is None:
        return [prompt or ""]
    return [message["content"] for message in messages if isinstance(message.get("content"), str)]


def refuse_surely_over(texts: Iterable[str], longest_token_bytes: int, context_length: int, param: str) -> None:
    """Refuse a prompt holding `texts` when even its fewest tokens fill the context (no room for one new token)."""
    if longest_token_bytes <= UNKNOWN:
        return
    fewest = fewest_tokens(texts, longest_token_bytes)
    if fewest >= context_length:
        raise InferrelayError(
            ErrorKind.CONTEXT_LENGTH,
            f"This model's maximum context length is {context_length} tokens, but the prompt has at least "
            f"{fewest} tokens (not counted further).",
            param=param,
        )


def longest_piece(pieces: Iterable[bytes]) -> int:
    """The longest token from each token's detokenized bytes, plus one: a decoder may drop a piece's leading space
    (SentencePiece's first token), so a token may stand for one byte more than it detokenizes to alone."""
    return max((len(piece) for piece in pieces), default=UNKNOWN) + 1


def longest_entry(vocabulary: Iterable[str]) -> int:
    """The longest token from a vocabulary's entries: a byte-level BPE entry ("Ġthe") stands for one byte per
    character; any other (SentencePiece "▁the", "<0xE4>", a special token) for at most its UTF-8 bytes."""
    entries = list(vocabulary)
    byte_level = any(entry.startswith("Ġ") for entry in entries)
    longest = UNKNOWN
    for entry in entries:
        exact = byte_level_bytes(entry) if byte_level else None
        longest = max(longest, len(exact) if exact is not None else len(entry.encode("utf-8", "surrogatepass")))
    return longest
