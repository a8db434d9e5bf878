"""OpenAI-compatible routes: chat, completions (plain and streamed), embeddings, the Responses API, models.

A route parses the request, hands the gateway (routing/gateway.py) an order
saying what to do on a loaded local model and what to send a provider, and
shapes the answer for HTTP.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from inferrelay.access import caller
from inferrelay.capabilities import Capability
from inferrelay.engines.base import Piece
from inferrelay.errors import ErrorKind, InferrelayError, classify
from inferrelay.observe import tracing
from inferrelay.observe.context import REQUEST_ID_HEADER
from inferrelay.observe.requests import Observer, Tracked
from inferrelay.outcome import Served, attempts_header, remedies_header
from inferrelay.providers.remote import RemoteClient
from inferrelay.routing import work
from inferrelay.routing.gateway import Order
from inferrelay.routing.ratelimit import estimate_tokens
from inferrelay.routing.tools import plan_tools
from inferrelay.runtime.slots import LoadedSlot
from inferrelay.server.bounds import (
    CallerGone,
    Deadline,
    DeadlinePassed,
    bounded,
    budget_s,
    gone_response,
    within_deadline,
)
from inferrelay.server.errors import sse_error
from inferrelay.server.relay import Relay, relay_of
from inferrelay.server.responses import ResponsesRequest, ResponseWriter
from inferrelay.server.schemas import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from inferrelay.server.shapes import ResponseShape
from inferrelay.server.streams import local_call_events, local_events, remote_events

T = TypeVar("T")
RemoteWork = Callable[[RemoteClient, str], Awaitable[T]]

router = APIRouter()

PATHS = {Capability.CHAT: "chat/completions", Capability.COMPLETION: "completions", Capability.EMBEDDINGS: "embeddings"}


REQUEST_ID = REQUEST_ID_HEADER


def served_headers(served: Served[Any], tracked: Tracked | None = None) -> dict[str, str]:
    headers = {"x-inferrelay-backend": served.backend, "x-inferrelay-attempts": attempts_header(served.attempts)}
    if tracked is not None:
        headers[REQUEST_ID] = tracked.request_id
    if served.remedies:
        headers["x-inferrelay-remediation"] = remedies_header(served.remedies)
    return headers


@dataclass
class OpenedStream:
    """A stream whose first event exists (so fallback is over); `close` stops its producer, once."""

    events: AsyncIterator[str]
    stop: Callable[[], Awaitable[None]]
    closed: list[Callable[[], None]] = field(default_factory=list)

    def on_close(self, callback: Callable[[], None]) -> None:
        self.closed.append(callback)

    async def close(self) -> None:
        try:
            await self.stop()
        finally:
            callbacks, self.closed = self.closed, []
            for callback in callbacks:
                callback()


class ClosingStreamingResponse(StreamingResponse):
    """Stops the producer however the response ends, client disconnects included (`on_abandon` hears of those)."""

    def __init__(
        self,
        opened: OpenedStream,
        headers: dict[str, str],
        done_marker: bool = True,
        on_abandon: Callable[[], None] = lambda: None,
    ) -> None:
        events = _until_done(opened.events) if done_marker else opened.events
        super().__init__(self._noting_end(events), media_type="text/event-stream", headers=headers)
        self._close = opened.close
        self._ended = False
        self._on_abandon = on_abandon

    async def _noting_end(self, events: AsyncIterator[str]) -> AsyncIterator[str]:
        try:
            async for event in events:
                yield event
        except Exception:  # an error ends a stream too (not a disconnect: that cancels or closes it)
            self._ended = True
            raise
        self._ended = True

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            if not self._ended:  # the client went away mid-stream
                self._on_abandon()
            await self._close()


async def _until_done(events: AsyncIterator[str]) -> AsyncIterator[str]:
    try:
        async for event in events:
            yield event
    except Exception as exc:  # after the first token there is no going back: say so in-band
        yield sse_error(classify(exc))
    yield "data: [DONE]\n\n"


@dataclass(frozen=True)
class Reshape:
    """How another API (the Responses API) rewrites a chat answer: the whole body, and the stream's events."""

    whole: Callable[[dict[str, Any]], dict[str, Any]] = lambda body: body
    stream: Callable[[AsyncIterator[str]], AsyncIterator[str]] | None = None


CHAT_AS_IS = Reshape()


async def generate(
    request: Request,
    body: ChatCompletionRequest | CompletionRequest,
    capability: Capability,
    reshape: Reshape = CHAT_AS_IS,
) -> Any:
    relay = relay_of(request)
    observer = relay.observer
    tracked = observer.begin(body.model, capability.value, body.stream, request.headers.get(REQUEST_ID))
    deadline = Deadline(budget_s(relay.settings, relay.catalog, body.model))
    try:
        with tracing.within(tracked.span):
            response = await bounded(request, deadline, _generate(relay, body, capability, tracked, reshape, deadline))
    except CallerGone:
        observer.cancelled(tracked)
        observer.finish(tracked)
        return gone_response()
    except Exception as exc:
        _failed(observer, tracked, exc)
        raise
    if not body.stream:
        observer.finish(tracked)
    return response


async def _generate(
    relay: Relay,
    body: ChatCompletionRequest | CompletionRequest,
    capability: Capability,
    tracked: Tracked,
    reshape: Reshape,
    deadline: Deadline,
) -> Any:
    observer = relay.observer
    generation = body.to_generation()
    plan = None
    if isinstance(body, ChatCompletionRequest) and body.tools:
        generation, plan = plan_tools(generation, body.tools, body.tool_choice)
    shape = ResponseShape(body.model, chat=capability is Capability.CHAT)
    forwarded = body.forwarded()
    path = PATHS[capability]

    def last_piece(piece: Piece) -> None:
        observer.usage(tracked, {"prompt_tokens": piece.prompt_tokens, "completion_tokens": piece.completion_tokens})

    def order(on_slot: Callable[[LoadedSlot], Awaitable[T]], on_remote: RemoteWork[T]) -> Order[T]:
        return Order(
            body.model,
            capability,
            on_slot,
            on_remote,
            body.needs(),
            body.keep_alive,
            body.require_text,
            lambda: estimate_tokens(forwarded),
        )

    if body.stream:

        async def local_stream(slot: LoadedSlot) -> OpenedStream:
            pieces = work.stream(slot, generation)
            try:
                first = await anext(pieces)  # a failure before the first piece falls back
            except BaseException:  # failed, or cancelled (its caller gone, its deadline passed): the model stops
                await pieces.aclose()
                raise
            if plan is not None and plan.functions:
                events = local_call_events(shape, plan, first, pieces, body.include_usage, last_piece)
            else:
                events = local_events(shape, first, pieces, body.include_usage, last_piece)
            return OpenedStream(events, pieces.aclose)

        async def remote_stream(client: RemoteClient, model: str) -> OpenedStream:
            upstream = await client.stream(path, forwarded, model, body.model)
            events = remote_events(upstream.first, upstream.rest, lambda usage: observer.usage(tracked, usage))
            return OpenedStream(events, upstream.aclose)

        opened = await relay.gateway.serve(order(local_stream, remote_stream))
        observer.served(tracked, opened)
        opened.result.on_close(lambda: observer.finish(tracked))
        opened.result.events = _noting_timeout(within_deadline(opened.result.events, deadline), observer, tracked)
        headers, gone = served_headers(opened, tracked), lambda: observer.cancelled(tracked)
        if reshape.stream is not None:
            opened.result.events = reshape.stream(opened.result.events)
            return ClosingStreamingResponse(opened.result, headers, done_marker=False, on_abandon=gone)
        return ClosingStreamingResponse(opened.result, headers, on_abandon=gone)

    async def local(slot: LoadedSlot) -> dict[str, Any]:
        pieces = await work.generate_several(slot, generation, body.n)
        wholes = [shape.whole(p, [c.as_openai() for c in plan.read(p.text)] if plan else []) for p in pieces]
        return _as_choices(wholes)

    async def remote(client: RemoteClient, model: str) -> dict[str, Any]:
        return await client.post(path, forwarded, model, body.model)

    served = await relay.gateway.serve(order(local, remote))
    observer.served(tracked, served)
    observer.usage(tracked, served.result.get("usage"))
    return JSONResponse(reshape.whole(served.result), headers=served_headers(served, tracked))


def _failed(observer: Observer, tracked: Tracked, exc: Exception) -> None:
    if isinstance(exc, DeadlinePassed):
        observer.timed_out(tracked, exc)
    else:
        observer.failed(tracked, classify(exc))
    observer.finish(tracked)


async def _noting_timeout(events: AsyncIterator[str], observer: Observer, tracked: Tracked) -> AsyncIterator[str]:
    """A stream stopped by its deadline is counted as one (its caller gets the error as an SSE event)."""
    try:
        async for event in events:
            yield event
    except DeadlinePassed as exc:
        observer.timed_out(tracked, exc)
        raise


def _as_choices(wholes: list[dict[str, Any]]) -> dict[str, Any]:
    """Several whole answers to one request as one answer with a choice each; the prompt is counted once."""
    body = wholes[0]
    if len(wholes) > 1:
        body["choices"] = [whole["choices"][0] | {"index": i} for i, whole in enumerate(wholes)]
        completion = sum(whole["usage"]["completion_tokens"] for whole in wholes)
        usage = body["usage"]
        usage["completion_tokens"], usage["total_tokens"] = completion, usage["prompt_tokens"] + completion
    return body


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Any:
    return await generate(request, body, Capability.CHAT)


@router.post("/v1/completions")
async def completions(body: CompletionRequest, request: Request) -> Any:
    return await generate(request, body, Capability.COMPLETION)


@router.post("/v1/responses")
async def responses(body: ResponsesRequest, request: Request) -> Any:
    """The Responses API, stateless, on the chat path (server/responses.py)."""
    writer = ResponseWriter(body)
    reshape = Reshape(writer.whole, writer.stream if body.stream else None)
    return await generate(request, body.to_chat(), Capability.CHAT, reshape)


@router.post("/v1/embeddings")
async def embeddings(body: EmbeddingRequest, request: Request) -> JSONResponse:
    relay = relay_of(request)
    observer = relay.observer
    tracked = observer.begin(body.model, Capability.EMBEDDINGS.value, False, request.headers.get(REQUEST_ID))
    deadline = Deadline(budget_s(relay.settings, relay.catalog, body.model))
    try:
        with tracing.within(tracked.span):
            served = await bounded(request, deadline, _embeddings(relay, body))
    except CallerGone:
        observer.cancelled(tracked)
        observer.finish(tracked)
        return gone_response()  # type: ignore[return-value]
    except Exception as exc:
        _failed(observer, tracked, exc)
        raise
    observer.served(tracked, served)
    observer.usage(tracked, served.result.get("usage"))
    observer.finish(tracked)
    return JSONResponse(served.result, headers=served_headers(served, tracked))


async def _embeddings(relay: Relay, body: EmbeddingRequest) -> Served[dict[str, Any]]:
    async def local(slot: LoadedSlot) -> dict[str, Any]:
        result = await work.embed(relay.pool, slot, body.texts, body.truncate)
        if body.encoding_format == "base64":
            data: list[Any] = [base64.b64encode(row.astype("<f4").tobytes()).decode() for row in result.vectors]
        else:
            data = result.vectors.tolist()
        return {
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(data)],
            "model": body.model,
            "usage": {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens},
        }

    forwarded = body.forwarded()

    async def remote(client: RemoteClient, model: str) -> dict[str, Any]:
        return await client.post("embeddings", forwarded, model, body.model)

    order = Order(
        body.model,
        Capability.EMBEDDINGS,
        local,
        remote,
        body.needs(),
        body.keep_alive,
        body.require_text,
        lambda: estimate_tokens(forwarded),
    )
    return await relay.gateway.serve(order)


@router.get("/v1/models")
async def models(request: Request) -> dict[str, Any]:
    return {"object": "list", "data": list(_model_entries(relay_of(request)).values())}


@router.get("/v1/models/{model_id:path}")
async def retrieve_model(model_id: str, request: Request) -> dict[str, Any]:
    """One entry of GET /v1/models (the client's `models.retrieve`); names may hold slashes (`org/model`)."""
    entry = _model_entries(relay_of(request)).get(model_id)
    if entry is None:
        raise InferrelayError(ErrorKind.MODEL_NOT_FOUND, f"The model {model_id!r} does not exist.", param="model")
    return entry


def _model_entries(relay: Relay) -> dict[str, dict[str, Any]]:
    local = {name: spec for name in relay.catalog.names() if (spec := relay.catalog.get(name))}
    entries = {}
    for name in filter(caller.visible, relay.resolver.exposed()):  # a key sees the models it may use
        entry: dict[str, Any] = {"id": name, "object": "model", "created": 0, "owned_by": "inferrelay"}
        if name in local:
            entry |= {"capabilities": [c.value for c in local[name].capabilities], "engines": local[name].engines}
        entries[name] = entry
    return entries
