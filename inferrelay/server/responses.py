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
from collections.abc import AsyncIterator, Iterator
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
            message = _chat_message(item, index)
            previous = messages[-1] if messages else {}
            if message.get("tool_calls") and previous.get("role") == "assistant":  # calls made in one turn
                previous["tool_calls"] = [*(previous.get("tool_calls") or []), *message["tool_calls"]]
            else:
                messages.append(message)
        return messages


_CALL_FIELDS = {"function_call": ("name",), "function_call_output": ("output",)}


def _chat_message(item: dict[str, Any], index: int) -> dict[str, Any]:
    """One input item as a chat message: a function_call as an assistant's tool call, its output as a tool message."""
    kind = item.get("type", "message")
    if kind == "message":
        content = item.get("content")
        if isinstance(content, list):
            content = [_chat_part(part) for part in content]
        return {"role": item.get("role"), "content": content}
    needed = ("call_id", *_CALL_FIELDS[kind]) if kind in _CALL_FIELDS else ()
    if missing := [key for key in needed if item.get(key) is None]:
        param = f"input.{index}.{missing[0]}"
        raise bad_request(f"{param}: a {kind} item needs {', '.join(missing)}", param=param)
    if kind == "function_call":
        call = {"id": item["call_id"], "type": "function",
                "function": {"name": item["name"], "arguments": item.get("arguments") or "{}"}}  # fmt: skip
        return {"role": "assistant", "content": None, "tool_calls": [call]}
    if kind == "function_call_output":
        output = item["output"]
        content = [_chat_part(part) for part in output] if isinstance(output, list) else output
        return {"role": "tool", "tool_call_id": item["call_id"], "content": content}
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
    """`auto`, `none` and `required` as they are; a named function in the chat shape; hosted tools refused."""
    if isinstance(choice, dict):
        if choice.get("type") != "function" or not choice.get("name"):
            hint = "'auto', 'none', 'required' or {'type': 'function', 'name': ...}"
            raise bad_request(f"tool_choice: only {hint} is supported here", param="tool_choice")
        return {"type": "function", "function": {"name": choice["name"]}}
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
        self._output: list[dict[str, Any]] = []  # a stream's items, in the order they opened
        self._text: list[str] = []
        self._text_at: int | None = None  # where the message sits in a stream's output, once it opened
        self._calls: dict[int, int] = {}  # a chat tool call's index -> where its item sits in the output

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
        output = [
            _function_call(call, f"fc_{uuid.uuid4().hex}", "completed") for call in message.get("tool_calls") or []
        ]
        if message.get("content") or not output:
            output.insert(0, self._message(message.get("content") or "", "completed"))
        return self.envelope("completed", output, _usage(chat.get("usage")))

    def _message(self, text: str | None, status: str) -> dict[str, Any]:
        """The assistant's message item; with no text it has no content part yet, as when a stream opens it."""
        content = [] if text is None else [{"type": "output_text", "text": text, "annotations": []}]
        return {"type": "message", "id": self.message_id, "status": status, "role": "assistant", "content": content}

    def event(self, kind: str, **fields: Any) -> str:
        self._sequence += 1
        payload = {"type": kind, "sequence_number": self._sequence, **fields}
        return f"event: {kind}\ndata: {json.dumps(payload)}\n\n"

    async def stream(self, chat_events: AsyncIterator[str]) -> AsyncIterator[str]:
        """The chat stream as Responses events: each output item (the message, each function call) opens when
        its first delta comes, grows by deltas, and all close in order before `response.completed`."""
        yield self.event("response.created", response=self.envelope("in_progress", [], None))
        yield self.event("response.in_progress", response=self.envelope("in_progress", [], None))
        usage = None
        try:
            async for event in chat_events:
                chunk = _chunk(event)
                if chunk is None:
                    continue
                usage = chunk.get("usage") or usage
                for choice in chunk.get("choices") or []:
                    delta = choice.get("delta") or {}
                    if text := delta.get("content"):
                        for out in self._text_delta(text):
                            yield out
                    for call in delta.get("tool_calls") or []:
                        for out in self._call_delta(call):
                            yield out
        except Exception as exc:  # after the first event: say so in-band, as the chat stream does
            error = classify(exc)
            yield self.event("error", code=error.kind.value, message=error.message, param=error.param)
            return
        if not self._output:  # nothing was said: an empty message, as in a whole answer
            for out in self._open_message():
                yield out
        for out in self._close_items():
            yield out
        yield self.event("response.completed", response=self.envelope("completed", self._output, _usage(usage)))

    def _open_message(self) -> Iterator[str]:
        self._text_at = len(self._output)
        self._output.append(self._message(None, "in_progress"))
        yield self.event("response.output_item.added", output_index=self._text_at, item=self._output[-1])
        part = {"type": "output_text", "text": "", "annotations": []}
        yield self.event("response.content_part.added", **self._text_ids(), part=part)

    def _text_ids(self) -> dict[str, Any]:
        return {"item_id": self.message_id, "output_index": self._text_at, "content_index": 0}

    def _text_delta(self, text: str) -> Iterator[str]:
        if self._text_at is None:
            yield from self._open_message()
        self._text.append(text)
        yield self.event("response.output_text.delta", **self._text_ids(), delta=text, logprobs=[])

    def _call_delta(self, delta: dict[str, Any]) -> Iterator[str]:
        """One streamed chat tool call delta: the first of an index opens a function_call item, arguments grow it."""
        function = delta.get("function") or {}
        index = delta.get("index", len(self._calls))
        if index not in self._calls:
            self._calls[index] = len(self._output)
            item = _function_call(delta | {"function": function | {"arguments": ""}}, f"fc_{uuid.uuid4().hex}")
            self._output.append(item)
            yield self.event("response.output_item.added", output_index=self._calls[index], item=item)
        at = self._calls[index]
        item = self._output[at]
        if arguments := function.get("arguments"):
            item["arguments"] += arguments
            yield self.event(
                "response.function_call_arguments.delta", item_id=item["id"], output_index=at, delta=arguments
            )

    def _close_items(self) -> Iterator[str]:
        """Each open item's `.done` events, in output order; the output then holds the finished items."""
        for at, item in enumerate(self._output):
            if item["type"] == "message":
                text = "".join(self._text)
                done = {"type": "output_text", "text": text, "annotations": []}
                yield self.event("response.output_text.done", **self._text_ids(), text=text, logprobs=[])
                yield self.event("response.content_part.done", **self._text_ids(), part=done)
                self._output[at] = item = self._message(text, "completed")
            else:
                item["arguments"] = item["arguments"] or "{}"
                args = {"item_id": item["id"], "output_index": at, "name": item["name"], "arguments": item["arguments"]}
                yield self.event("response.function_call_arguments.done", **args)
                item["status"] = "completed"
            yield self.event("response.output_item.done", output_index=at, item=item)


def _chunk(event: str) -> dict[str, Any] | None:
    data = event.strip().removeprefix("data:").strip()
    if not data or data == "[DONE]":
        return None
    try:
        chunk = json.loads(data)
    except ValueError:
        return None
    return chunk if isinstance(chunk, dict) else None


def _function_call(call: dict[str, Any], item_id: str, status: str = "in_progress") -> dict[str, Any]:
    """A chat tool call as a Responses function_call item; a call an upstream left without an id gets one."""
    function = call.get("function") or {}
    return {
        "type": "function_call", "id": item_id, "call_id": call.get("id") or f"call_{uuid.uuid4().hex}",
        "name": function.get("name"), "arguments": function.get("arguments", "{}"), "status": status,
    }  # fmt: skip


def _usage(usage: dict[str, Any] | None) -> dict[str, Any] | None:
    if not usage:
        return None
    inputs, outputs = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
    return {
        "input_tokens": inputs, "output_tokens": outputs, "total_tokens": inputs + outputs,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens_details": {"reasoning_tokens": 0},
    }  # fmt: skip
