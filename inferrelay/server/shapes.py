"""OpenAI's response shapes: a whole answer, stream chunks and usage, for chat and completions."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from inferrelay.engines.base import Piece
from inferrelay.engines.decoding import TokenLogprob


class ResponseShape:
    """How one endpoint writes a whole answer and the chunks of a stream."""

    def __init__(self, model: str, chat: bool) -> None:
        self.chat = chat
        self.model = model
        self.id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        self.created = int(time.time())

    def _envelope(self, obj: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model, "choices": choices}

    @staticmethod
    def usage(piece: Piece) -> dict[str, int]:
        total = piece.prompt_tokens + piece.completion_tokens
        return {
            "prompt_tokens": piece.prompt_tokens,
            "completion_tokens": piece.completion_tokens,
            "total_tokens": total,
        }

    def whole(self, piece: Piece, calls: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        if calls:
            message = {"role": "assistant", "content": None, "tool_calls": calls}
            choice = {"index": 0, "message": message, "finish_reason": "tool_calls"}
            return self._envelope("chat.completion", [choice]) | {"usage": self.usage(piece)}
        if self.chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": piece.text}}
        else:
            choice = {"index": 0, "text": piece.text, "logprobs": None}
        if piece.logprobs is not None:
            choice["logprobs"] = self.logprobs(piece.logprobs)
        choice["finish_reason"] = piece.finish_reason
        body = self._envelope("chat.completion" if self.chat else "text_completion", [choice])
        return body | {"usage": self.usage(piece)}

    def chunk(
        self,
        text: str | None,
        finish: str | None = None,
        role: bool = False,
        logprobs: list[TokenLogprob] | None = None,
        offset: int = 0,
    ) -> dict[str, Any]:
        """One stream chunk; `logprobs` are its text's tokens', `offset` where its text starts in the answer."""
        if self.chat:
            delta: dict[str, str] = {"role": "assistant"} if role else {}
            if text:
                delta["content"] = text
            choice: dict[str, Any] = {"index": 0, "delta": delta}
            if logprobs is not None:
                choice["logprobs"] = self.logprobs(logprobs)
            choice["finish_reason"] = finish
            return self._envelope("chat.completion.chunk", [choice])
        choice = {"index": 0, "text": text or "", "logprobs": self.logprobs(logprobs, offset), "finish_reason": finish}
        return self._envelope("text_completion", [choice])

    def logprobs(self, tokens: list[TokenLogprob] | None, offset: int = 0) -> dict[str, Any] | None:
        """OpenAI's logprobs object: chat's `content` list, or the legacy completion's four parallel lists (its
        top_logprobs always hold the chosen token too, as OpenAI's do; text_offset counts from the answer's start,
        the prompt not echoed)."""
        if tokens is None:
            return None
        if self.chat:
            content = [_entry(t) | {"top_logprobs": [_entry(alt) for alt in t.top]} for t in tokens]
            return {"content": content, "refusal": None}
        offsets = []
        for t in tokens:
            offsets.append(offset)
            offset += len(t.token)
        return {
            "tokens": [t.token for t in tokens],
            "token_logprobs": [t.logprob for t in tokens],
            "top_logprobs": [{alt.token: alt.logprob for alt in (*t.top, t)} for t in tokens],
            "text_offset": offsets,
        }

    def calls_chunk(self, calls: list[dict[str, Any]]) -> dict[str, Any]:
        """The calls as one delta each, in OpenAI's streamed shape (index, id, type, name and arguments)."""
        deltas = [{"index": i, **call} for i, call in enumerate(calls)]
        choice = {"index": 0, "delta": {"tool_calls": deltas}, "finish_reason": None}
        return self._envelope("chat.completion.chunk", [choice])

    def usage_chunk(self, piece: Piece) -> dict[str, Any]:
        obj = "chat.completion.chunk" if self.chat else "text_completion"
        return self._envelope(obj, []) | {"usage": self.usage(piece)}


def _entry(token: TokenLogprob) -> dict[str, Any]:
    return {"token": token.token, "logprob": token.logprob, "bytes": list(token.bytes)}


def sse_event(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload)}\n\n"


def usage_in(event: str) -> dict[str, Any] | None:
    """A stream event's `usage` object, however the upstream spaced its JSON; only events naming usage are parsed."""
    if '"usage"' not in event:
        return None
    try:
        payload = json.loads(event.strip().removeprefix("data:"))
    except ValueError:
        return None
    usage = payload.get("usage") if isinstance(payload, dict) else None
    return usage if isinstance(usage, dict) else None
