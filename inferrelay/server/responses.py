"""The Responses API (`POST /v1/responses`), stateless, mapped onto the chat path and back.

A Responses request becomes a chat completion request (input items become
messages, instructions a system message, function tools chat tools,
`text.format` a response_format), walks the same route as any chat request,
and its answer or stream is rewritten in the Responses shape. Nothing is
stored, so `previous_response_id` is refused with a 400 that says so.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from inferrelay.config.units import Duration
from inferrelay.errors import bad_request, classify
from inferrelay.server.schemas import ChatCompletionRequest


class ResponsesRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    text: dict[str, Any] | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = None
    top_p: float | None = None
    stream: bool = False
    previous_response_id: str | None = None
    store: bool | None = None
    metadata: dict[str, Any] | None = None
    user: str | None = None
    keep_alive: Duration | None = None

    @field_validator("previous_response_id")
    @classmethod
    def _stateless(cls, value: str | None) -> str | None:
        if value:
            raise ValueError("this server keeps no responses: send the whole conversation in input instead")
        return value

    def to_chat(self) -> ChatCompletionRequest:
        """The same request as a chat completion; a mistake in it is a 400 naming the Responses parameter."""
        body: dict[str, Any] = {"model": self.model, "messages": self._messages(), "stream": self.stream}
        optional = {
            "temperature": self.temperature, "top_p": self.top_p, "max_tokens": self.max_output_tokens,
            "tools": [_chat_tool(t) for t in self.tools] if self.tools else None,
            "tool_choice": _chat_tool_choice(self.tool_choice), "parallel_tool_calls": self.parallel_tool_calls,
            "response_format": _chat_format((self.text or {}).get("format")), "user": self.user,
            "keep_alive": self.keep_alive,
        }  # fmt: skip
        body |= {k: v for k, v in optional.items() if v is not None}
        if self.stream:
            body["stream_options"] = {"include_usage": True}
        try:
            return ChatCompletionRequest.model_validate(body)
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(p) for p in error["loc"])
            param = "input" if where.startswith("messages") else where
            raise bad_request(f"{where}: {error['msg']}", param=param) from None

    def _messages(self) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        if self.instructions:
            messages.append({"role": "system", "content": self.instructions})
        if isinstance(self.input, str):
            return [*messages, {"role": "user", "content": self.input}]
        for index, item in enumerate(self.input):
            messages.append(_chat_message(item, index))
        return messages


def _chat_message(item: dict[str, Any], index: int) -> dict[str, Any]:
    kind = item.get("type", "message")
    if kind == "message":
        content = item.get("content")
        if isinstance(content, list):
            content = [_chat_part(part) for part in content]
        return {"role": item.get("role"), "content": content}
    if kind == "function_call":
        call = {"id": item.get("call_id"), "type": "function",
                "function": {"name": item.get("name"), "arguments": item.get("arguments", "{}")}}  # fmt: skip
        return {"role": "assistant", "content": None, "tool_calls": [call]}
    if kind == "function_call_output":
        output = item.get("output")
        return {"role": "tool", "tool_call_id": item.get("call_id"), "content": output}
    raise bad_request(f"input.{index}: items of type {kind!r} are not supported here", param=f"input.{index}")


def _chat_part(part: Any) -> Any:
    if isinstance(part, dict) and part.get("type") in ("input_text", "output_text"):
        return {"type": "text", "text": part.get("text")}
    if isinstance(part, dict) and part.get("type") == "input_image":
        return {"type": "image_url", "image_url": {"url": part.get("image_url")}}
    return part


def _chat_tool(tool: dict[str, Any]) -> dict[str, Any]:
    if tool.get("type") != "function":
        raise bad_request(f"tools: only function tools are supported, not {tool.get('type')!r}", param="tools")
    function = {k: tool[k] for k in ("name", "description", "parameters", "strict") if k in tool}
    return {"type": "function", "function": function}


def _chat_tool_choice(choice: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "function", "function": {"name": choice.get("name")}}
    return choice


def _chat_format(fmt: dict[str, Any] | None) -> dict[str, Any] | None:
    if not fmt or fmt.get("type") == "text":
        return None
    if fmt.get("type") == "json_schema":
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        return {"type": "json_schema", "json_schema": schema}
    return {"type": fmt.get("type")}


class ResponseWriter:
    """One response's identity, and the Responses shape of a chat answer or of its stream."""

    def __init__(self, request: ResponsesRequest) -> None:
        self.request = request
        self.id = f"resp_{uuid.uuid4().hex}"
        self.message_id = f"msg_{uuid.uuid4().hex}"
        self.created_at = int(time.time())
        self._sequence = 0

    def envelope(self, status: str, output: list[dict[str, Any]], usage: dict[str, Any] | None) -> dict[str, Any]:
        request = self.request
        return {
            "id": self.id, "object": "response", "created_at": self.created_at, "status": status,
            "model": request.model, "output": output, "instructions": request.instructions,
            "tools": request.tools or [], "tool_choice": request.tool_choice or "auto",
            "parallel_tool_calls": request.parallel_tool_calls is not False,
            "temperature": request.temperature, "top_p": request.top_p,
            "max_output_tokens": request.max_output_tokens, "metadata": request.metadata or {},
            "text": request.text or {"format": {"type": "text"}}, "error": None, "incomplete_details": None,
            "usage": usage,
        }  # fmt: skip

    def whole(self, chat: dict[str, Any]) -> dict[str, Any]:
        message = chat["choices"][0]["message"]
        output = [_function_call(call) for call in message.get("tool_calls") or []]
        if message.get("content") or not output:
            output.insert(0, self._message(message.get("content") or "", "completed"))
        return self.envelope("completed", output, _usage(chat.get("usage")))

    def _message(self, text: str, status: str) -> dict[str, Any]:
        content = [{"type": "output_text", "text": text, "annotations": []}]
        return {"type": "message", "id": self.message_id, "status": status, "role": "assistant", "content": content}

    def event(self, kind: str, **fields: Any) -> str:
        self._sequence += 1
        payload = {"type": kind, "sequence_number": self._sequence, **fields}
        return f"event: {kind}\ndata: {json.dumps(payload)}\n\n"

    async def stream(self, chat_events: AsyncIterator[str]) -> AsyncIterator[str]:
        """The chat stream's text deltas as Responses events, opened and closed the way the SDK expects."""
        yield self.event("response.created", response=self.envelope("in_progress", [], None))
        yield self.event("response.in_progress", response=self.envelope("in_progress", [], None))
        yield self.event("response.output_item.added", output_index=0, item=self._message("", "in_progress"))
        part = {"type": "output_text", "text": "", "annotations": []}
        ids = {"item_id": self.message_id, "output_index": 0, "content_index": 0}
        yield self.event("response.content_part.added", **ids, part=part)
        text: list[str] = []
        usage = None
        try:
            async for event in chat_events:
                chunk = _chunk(event)
                if chunk is None:
                    continue
                usage = chunk.get("usage") or usage
                for choice in chunk.get("choices") or []:
                    if delta := (choice.get("delta") or {}).get("content"):
                        text.append(delta)
                        yield self.event("response.output_text.delta", **ids, delta=delta, logprobs=[])
        except Exception as exc:  # after the first event: say so in-band, as the chat stream does
            error = classify(exc)
            yield self.event("error", code=error.kind.value, message=error.message, param=error.param)
            return
        whole = "".join(text)
        yield self.event("response.output_text.done", **ids, text=whole, logprobs=[])
        yield self.event("response.content_part.done", **ids, part=part | {"text": whole})
        item = self._message(whole, "completed")
        yield self.event("response.output_item.done", output_index=0, item=item)
        yield self.event("response.completed", response=self.envelope("completed", [item], _usage(usage)))


def _chunk(event: str) -> dict[str, Any] | None:
    data = event.strip().removeprefix("data:").strip()
    if not data or data == "[DONE]":
        return None
    try:
        chunk = json.loads(data)
    except ValueError:
        return None
    return chunk if isinstance(chunk, dict) else None


def _function_call(call: dict[str, Any]) -> dict[str, Any]:
    function = call.get("function") or {}
    return {
        "type": "function_call", "id": f"fc_{uuid.uuid4().hex}", "call_id": call.get("id"),
        "name": function.get("name"), "arguments": function.get("arguments", "{}"), "status": "completed",
    }  # fmt: skip


def _usage(usage: dict[str, Any] | None) -> dict[str, Any] | None:
    if not usage:
        return None
    inputs, outputs = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
    return {
        "input_tokens": inputs, "output_tokens": outputs, "total_tokens": inputs + outputs,
        "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0},
    }  # fmt: skip
