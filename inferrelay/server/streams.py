"""The events of a streamed answer: a local engine's pieces written as OpenAI chunks, a provider's relayed."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from inferrelay.engines.base import Piece
from inferrelay.routing.tools import ToolPlan
from inferrelay.server.shapes import ResponseShape, sse_event, usage_in


async def local_events(
    shape: ResponseShape,
    first: Piece,
    rest: AsyncIterator[Piece],
    include_usage: bool,
    on_last: Callable[[Piece], None],
) -> AsyncIterator[str]:
    """Each piece as a chunk, with the log probabilities of its own tokens when they were asked for."""
    if shape.chat:
        yield sse_event(shape.chunk(None, role=True))
    piece, offset = first, 0
    while True:
        if piece.text or piece.logprobs:
            yield sse_event(shape.chunk(piece.text, logprobs=piece.logprobs, offset=offset))
            offset += len(piece.text)
        if piece.finish_reason:
            on_last(piece)
            yield sse_event(shape.chunk(None, finish=piece.finish_reason))
            if include_usage:
                yield sse_event(shape.usage_chunk(piece))
            return
        piece = await anext(rest)


async def local_call_events(
    shape: ResponseShape,
    plan: ToolPlan,
    first: Piece,
    rest: AsyncIterator[Piece],
    include_usage: bool,
    on_last: Callable[[Piece], None],
) -> AsyncIterator[str]:
    """With tools, the answer is read whole before it is sent: as tool_calls deltas when it is a call, else as
    text. (A call cannot be told from text token by token.)"""
    texts, logprobs, piece = [first.text], first.logprobs, first
    while not piece.finish_reason:
        piece = await anext(rest)
        texts.append(piece.text)
        if piece.logprobs is not None:
            logprobs = [*(logprobs or []), *piece.logprobs]
    on_last(piece)
    text = "".join(texts)
    calls = [c.as_openai() for c in plan.read(text)]
    yield sse_event(shape.chunk(None, role=True))
    if calls:
        yield sse_event(shape.calls_chunk(calls))
    elif text:
        yield sse_event(shape.chunk(text, logprobs=logprobs))
    yield sse_event(shape.chunk(None, finish="tool_calls" if calls else piece.finish_reason))
    if include_usage:
        yield sse_event(shape.usage_chunk(piece))


async def remote_events(
    first: str, rest: AsyncIterator[str], on_usage: Callable[[dict[str, Any]], None]
) -> AsyncIterator[str]:
    """The upstream's events as they come; a usage chunk (stream_options.include_usage) is counted."""
    yield first
    async for event in rest:
        if (usage := usage_in(event)) is not None:
            on_usage(usage)
        yield event
