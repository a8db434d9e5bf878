"""The `runtime.limits:` block: how much one request may hold, checked at the door before any model sees it."""

from __future__ import annotations

from pydantic import Field

from inferrelay.config.strict import Strict
from inferrelay.config.units import Size


class RequestLimits(Strict):
    max_body_bytes: Size = Field(
        default=32 * 2**20,
        ge=1,
        description="the request body, counted while it is read (413 past it, Content-Length checked first)",
    )
    max_text_chars: int = Field(
        default=4_000_000,
        ge=1,
        description="characters in all the strings of one request's JSON body together (about a million tokens)",
    )
    max_messages: int = Field(default=2048, ge=1, description="messages of a chat request (items of a Responses input)")
    max_stop: int = Field(default=4, ge=0, description="stop sequences of a request (OpenAI's limit)")
    max_stop_chars: int = Field(default=256, ge=1, description="characters of each stop sequence")
    max_inputs: int = Field(default=2048, ge=1, description="inputs of one embeddings request (OpenAI's limit)")
    max_input_chars: int = Field(default=1_000_000, ge=1, description="characters of each embeddings input")
