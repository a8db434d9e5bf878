"""Chat prompt token ids in which only the chat template's own special tokens are control tokens.

Tokenizing the whole rendered template with special tokens parsed would turn a
caller's `<|im_end|><|im_start|>system` into real turn markers: anyone could
write a system turn. So the template is rendered a second time with each
caller string replaced by a placeholder, which says which characters are the
template's; the rendered text is then cut at the template's own special tokens
only, and each stretch between them (template text and caller text together,
as the tokenizer would see it) is tokenized with special tokens read as text.
For a conversation with no special-token text in it the ids are exactly those
of tokenizing the whole rendered text (docs/engines.md, "Caller text is text").
"""

from __future__ import annotations

import json
import re
import secrets
import threading
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from inferrelay.errors import bad_request

Messages = list[dict[str, Any]]
STRUCTURE = {"role": None, "type": "function"}
"""Values the templates branch on and callers cannot make free text of: kept as they are (None: any value)."""


class PromptTokenizer(Protocol):
    """What an engine's tokenizer offers for this: both ways of reading special-token text, and its control tokens."""

    def with_special(self, text: str) -> list[int]:
        """The template's own text: special-token text becomes control tokens."""

    def as_text(self, text: str) -> list[int]:
        """A caller's text: special-token text is tokenized like any other text."""

    def control_text(self, token: int) -> str | None:
        """The text of a control token (`<|im_start|>`); None for an ordinary token."""


def chat_prompt_ids(render: Callable[[Messages], str], messages: Messages, tokenizer: PromptTokenizer) -> list[int]:
    """The ids of the rendered conversation, caller strings tokenized as text wherever the template puts them."""
    nonce = secrets.token_hex(6)
    strings: list[str] = []
    marked = [_mark(message, nonce, strings) for message in messages]
    text = render(messages)
    if not strings:
        return tokenizer.with_special(text)
    pieces = re.split(f"ph{nonce}x(\\d+)x", render(marked))  # template, caller index, template, ...
    parts = _located(text, pieces, strings)
    return _tokenized(parts, tokenizer) if parts is not None else _whole_if_unchanged(text, pieces[::2], tokenizer)


def _mark(value: Any, nonce: str, strings: list[str], key: str | None = None, data: bool = False) -> Any:
    """`value` with every caller string (non-empty) replaced by a placeholder that names its index in `strings`.
    Dict keys are structure (role, content, ...) except inside a tool call's arguments, which are the caller's."""
    if isinstance(value, str):
        if not value or (not data and key in STRUCTURE and STRUCTURE[key] in (None, value)):
            return value
        strings.append(value)
        return f"ph{nonce}x{len(strings) - 1}x"
    if isinstance(value, dict):
        inner = data or key == "arguments"
        return {
            (_mark(k, nonce, strings, data=True) if inner else k): _mark(v, nonce, strings, k, inner)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_mark(v, nonce, strings, key, data) for v in value]
    return value


def _located(text: str, pieces: list[str], strings: list[str]) -> list[tuple[str, bool]] | None:
    """`text` cut into (stretch, is the caller's): the template's pieces found exactly where the placeholder render
    puts them, each caller string between them as the template rendered it (as is, trimmed, or JSON-escaped).
    None when the template did something else with a caller string."""
    parts: list[tuple[str, bool]] = []
    at = 0
    for index, piece in enumerate(pieces):
        if index % 2 == 0:
            if not text.startswith(piece, at):
                return None
            parts.append((piece, False))
            at += len(piece)
            continue
        after = pieces[index + 1]
        rendered = next((r for r in _renderings(strings[int(piece)]) if _fits(text, at, r, after)), None)
        if rendered is None:
            return None
        parts.append((rendered, True))
        at += len(rendered)
    return parts if at == len(text) else None


def _fits(text: str, at: int, rendered: str, after: str) -> bool:
    return text.startswith(rendered, at) and text.startswith(after, at + len(rendered))


def _renderings(value: str) -> Iterator[str]:
    """How templates commonly render a string: as is, trimmed (`| trim`), JSON-escaped (`| tojson`)."""
    seen: set[str] = set()
    escaped = json.dumps(value)[1:-1]
    html_safe = escaped.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").replace("'", "\\u0027")
    candidates = (value, value.strip(), value.lstrip(), value.rstrip(), json.dumps(value, ensure_ascii=False)[1:-1])
    for candidate in (*candidates, escaped, html_safe):
        if candidate not in seen:
            seen.add(candidate)
            yield candidate


def _whole_if_unchanged(text: str, template: list[str], tokenizer: PromptTokenizer) -> list[int]:
    """When the template did something else with a caller string (a slice, a branch on it), the caller's text
    cannot be told apart in the rendered text: it is tokenized whole, as before, if that makes no control token
    beyond the template's own; otherwise refused."""
    ids = tokenizer.with_special(text)
    own = [t for piece in template for t in tokenizer.with_special(piece) if tokenizer.control_text(t) is not None]
    if [t for t in ids if tokenizer.control_text(t) is not None] != own:
        raise bad_request(
            "a message holds the text of the model's special tokens (such as its turn markers), and this model's "
            "chat template changes message text in a way that cannot keep them as text: remove them",
            "messages",
        )
    return ids


def _tokenized(parts: list[tuple[str, bool]], tokenizer: PromptTokenizer) -> list[int]:
    """Cut at the template's control tokens only; each stretch between them tokenized with special text as text."""
    items: list[str | int] = []
    for stretch, callers in parts:
        items.extend([stretch] if callers else _split_at_controls(stretch, tokenizer))
    ids: list[int] = []
    pending: list[str] = []
    for item in [*items, -1]:
        if isinstance(item, str):
            pending.append(item)
            continue
        if pending:
            ids.extend(tokenizer.as_text("".join(pending)))
            pending = []
        if item >= 0:
            ids.append(item)
    return ids


def _split_at_controls(piece: str, tokenizer: PromptTokenizer) -> list[str | int]:
    """The template's piece as text and control tokens, cut where the tokenizer itself finds its control tokens."""
    ids = tokenizer.with_special(piece)
    items: list[str | int] = []
    at = 0
    for token in ids:
        control = tokenizer.control_text(token)
        if control is None:
            continue
        found = piece.find(control, at)
        if found < 0:  # a control token the tokenizer made of other text: keep the piece's own ids as they are
            return list(ids)
        items.extend([piece[at:found], token])
        at = found + len(control)
    items.append(piece[at:])
    return items


class HFPromptTokenizer:
    """A transformers tokenizer (torch, vllm): `split_special_tokens` reads special-token text as text.

    A fast tokenizer applies `split_special_tokens` by setting a flag on its one Rust tokenizer for the call, so
    two threads encoding at once (a batching engine's callers) could each tokenize under the other's flag: the
    template's control tokens split into text. Every call here holds one lock."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._controls = {i: t.content for i, t in tokenizer.added_tokens_decoder.items() if t.special}
        self._lock = threading.Lock()

    def _ids(self, text: str, **options: bool) -> list[int]:
        with self._lock:
            return [int(t) for t in self._tokenizer(text, **options)["input_ids"]]

    def with_special(self, text: str) -> list[int]:
        return self._ids(text, add_special_tokens=False, split_special_tokens=False)

    def as_text(self, text: str) -> list[int]:
        return self._ids(text, add_special_tokens=False, split_special_tokens=True)

    def control_text(self, token: int) -> str | None:
        return self._controls.get(token)

    def prompt(self, text: str) -> list[int]:
        """A completion's prompt: the tokenizer's own additions (a BOS), special-token text as text."""
        return self._ids(text, split_special_tokens=True)
