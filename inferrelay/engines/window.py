"""Embedding inputs past a model's window: cut to it, as sentence-transformers does, never tokenized whole.

A window of N tokens holds at most N times the longest token's characters, so
a longer text is first cut there, at a word's end (a whole word tokenizes the
same whatever follows it), and only that prefix is tokenized. Text that makes
few tokens (runs of spaces, marks a tokenizer drops) may hold more: the cut
doubles until its prefix is over the window, up to GROWTH times the first one.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

GROWTH = 16
"""How far past its first bound a cut may grow before the text is taken as over the window anyway."""
WHITESPACE = " \t\n\r\f\v\xa0\u3000"


@dataclass(frozen=True)
class Window:
    tokens: int
    """The most tokens the model reads, special tokens included."""
    chars_per_token: int
    """The longest token's length in characters: a window's text is at most tokens * this long."""

    def cut(self, texts: list[str], count: Callable[[str], int]) -> tuple[list[str], set[int]]:
        """The texts with each long one cut (`count` tokenizes a prefix); and the indices of those cut, each
        holding more than the window, so that the window's tokens come from it as from the whole text."""
        out, cut = list(texts), set()
        first = self.tokens * max(1, self.chars_per_token)
        for index, text in enumerate(texts):
            if len(text) > first:
                prefix, over = _prefix_over(text, first, self.tokens, count)
                if over:
                    out[index] = prefix
                    cut.add(index)
        return out, cut


def _prefix_over(text: str, bound: int, window: int, count: Callable[[str], int]) -> tuple[str, bool]:
    """The shortest doubling prefix of `text` over `window` tokens, and True; `text` and False when it is not."""
    limit = bound * GROWTH
    while bound < len(text):
        prefix = at_word_end(text, bound)
        if bound >= limit or count(prefix) > window:
            return prefix, True
        bound *= 2
    return text, False


def at_word_end(text: str, bound: int) -> str:
    """`text` cut at or before `bound` characters, after a whole word; mid-word only where no space comes first."""
    head = text[: bound + 1]
    space = max(head.rfind(c) for c in WHITESPACE)
    kept = head[:space].rstrip() if space > 0 else ""
    return kept or text[:bound]


def longest_token(vocabulary: Iterable[str]) -> int:
    """Characters in the vocabulary's longest token, a WordPiece continuation's `##` left out."""
    return max((len(token.removeprefix("##")) for token in vocabulary), default=1)


def window_of(folder: Path, configured: int) -> int:
    """The model's window: its configured context length, no more than the sentence-transformers config's
    max_seq_length (the length the model was trained to embed) or the positions the encoder has."""
    limits = [configured]
    st_config = folder / "sentence_bert_config.json"
    if st_config.is_file():
        limits.append(int(json.loads(st_config.read_text()).get("max_seq_length") or configured))
    config = folder / "config.json"
    if config.is_file():
        limits.append(int(json.loads(config.read_text()).get("max_position_embeddings") or configured))
    return min(limits)
