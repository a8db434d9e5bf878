"""Render a model's own chat template (from its GGUF or tokenizer), sandboxed as transformers does."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

from inferrelay.errors import ErrorKind, InferrelayError


def render_chat(template: str, messages: list[dict[str, str]], **special: Any) -> str:
    with template_errors():
        text = _compile(template).render(messages=messages, add_generation_prompt=True, **special)
    return str(text)


@contextmanager
def template_errors() -> Iterator[None]:
    """A chat template that fails on the messages given is the caller's error, naming `messages`."""
    try:
        yield
    except InferrelayError:
        raise
    except Exception as exc:
        raise InferrelayError(
            ErrorKind.BAD_REQUEST, f"the model's chat template rejected the messages: {exc}", param="messages"
        ) from exc


@cache
def _compile(template: str) -> Any:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise InferrelayError(ErrorKind.BAD_REQUEST, message, param="messages")

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template)
