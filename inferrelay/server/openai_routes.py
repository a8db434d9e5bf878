"""OpenAI-compatible routes: chat, completions (plain and streamed), embeddings, models."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from inferrelay.config.schema import ModelSpec
from inferrelay.engines.base import Capability, EmbeddingModel, GenerationRequest, LoadedModel, Piece, TextModel
from inferrelay.errors import ErrorKind, InferrelayError, classify
from inferrelay.routing.batching import embed_sorted
from inferrelay.routing.fallback import Served, attempts_header
from inferrelay.routing.pool import LoadedSlot, WorkerStream
from inferrelay.server.errors import sse_error
from inferrelay.server.relay import Relay, relay_of
from inferrelay.server.schemas import ChatCompletionRequest, CompletionRequest, EmbeddingRequest

router = APIRouter()


def served_headers(served: Served[Any]) -> dict[str, str]:
    return {"x-inferrelay-backend": served.backend, "x-inferrelay-attempts": attempts_header(served.attempts)}


def _as(model: LoadedModel, kind: type[Any]) -> Any:
    if not isinstance(model, kind):
        raise InferrelayError(
            ErrorKind.ENGINE_UNAVAILABLE, f"{model.engine_name} loaded this model without {kind.__name__}"
        )
    return model


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

    def whole(self, piece: Piece) -> dict[str, Any]:
        if self.chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": piece.text}}
        else:
            choice = {"index": 0, "text": piece.text, "logprobs": None}
        choice["finish_reason"] = piece.finish_reason
        body = self._envelope("chat.completion" if self.chat else "text_completion", [choice])
        return body | {"usage": self.usage(piece)}

    def chunk(self, text: str | None, finish: str | None = None, role: bool = False) -> dict[str, Any]:
        if self.chat:
            delta: dict[str, str] = {"role": "assistant"} if role else {}
            if text:
                delta["content"] = text
            choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish}
            return self._envelope("chat.completion.chunk", [choice])
        return self._envelope(
            "text_completion", [{"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}]
        )

    def usage_chunk(self, piece: Piece) -> dict[str, Any]:
        obj = "chat.completion.chunk" if self.chat else "text_completion"
        return self._envelope(obj, []) | {"usage": self.usage(piece)}


def _event(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload)}\n\n"


async def _generate(request: Request, body: ChatCompletionRequest | CompletionRequest, capability: Capability) -> Any:
    relay = relay_of(request)
    spec = relay.model(body.model, capability)
    generation = body.to_generation()
    shape = ResponseShape(body.model, chat=capability is Capability.CHAT)
    if body.stream:
        return await _stream(relay, spec, capability, generation, shape, body.include_usage)

    async def run(slot: LoadedSlot) -> Piece:
        model: TextModel = _as(slot.model, TextModel)
        return await slot.call(lambda: model.generate(generation))

    served = await relay.chain.serve(spec, capability, run)
    return JSONResponse(shape.whole(served.result), headers=served_headers(served))


class ClosingStreamingResponse(StreamingResponse):
    """Stops the engine's stream however the response ends, client disconnects included."""

    def __init__(self, content: AsyncIterator[str], stream: WorkerStream[Piece], headers: dict[str, str]) -> None:
        super().__init__(content, media_type="text/event-stream", headers=headers)
        self._stream = stream

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._stream.aclose()


async def _stream(
    relay: Relay,
    spec: ModelSpec,
    capability: Capability,
    generation: GenerationRequest,
    shape: ResponseShape,
    include_usage: bool,
) -> StreamingResponse:
    async def open_stream(slot: LoadedSlot) -> tuple[Piece, WorkerStream[Piece]]:
        model: TextModel = _as(slot.model, TextModel)
        pieces = slot.stream(lambda: model.stream(generation))
        return await anext(pieces), pieces  # a failure before the first piece falls back

    served = await relay.chain.serve(spec, capability, open_stream)
    first, rest = served.result

    async def events() -> AsyncIterator[str]:
        if shape.chat:
            yield _event(shape.chunk(None, role=True))
        try:
            piece = first
            while True:
                if piece.text:
                    yield _event(shape.chunk(piece.text))
                if piece.finish_reason:
                    yield _event(shape.chunk(None, finish=piece.finish_reason))
                    if include_usage:
                        yield _event(shape.usage_chunk(piece))
                    break
                piece = await anext(rest)
        except Exception as exc:  # after the first token there is no going back: say so in-band
            error = classify(exc)
            relay.registry.record_failure(served.backend.removeprefix("local/"), spec.name, error)
            yield sse_error(error)
        yield "data: [DONE]\n\n"

    return ClosingStreamingResponse(events(), rest, served_headers(served))


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Any:
    return await _generate(request, body, Capability.CHAT)


@router.post("/v1/completions")
async def completions(body: CompletionRequest, request: Request) -> Any:
    return await _generate(request, body, Capability.COMPLETION)


@router.post("/v1/embeddings")
async def embeddings(body: EmbeddingRequest, request: Request) -> JSONResponse:
    relay = relay_of(request)
    spec = relay.model(body.model, Capability.EMBEDDINGS)
    texts = body.texts

    async def run(slot: LoadedSlot) -> Any:
        model: EmbeddingModel = _as(slot.model, EmbeddingModel)
        return await slot.call(lambda: embed_sorted(model, texts))

    served = await relay.chain.serve(spec, Capability.EMBEDDINGS, run)
    vectors = served.result.vectors
    if body.encoding_format == "base64":
        data = [base64.b64encode(row.astype("<f4").tobytes()).decode() for row in vectors]
    else:
        data = vectors.tolist()
    payload = {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(data)],
        "model": body.model,
        "usage": {"prompt_tokens": served.result.prompt_tokens, "total_tokens": served.result.prompt_tokens},
    }
    return JSONResponse(payload, headers=served_headers(served))


@router.get("/v1/models")
async def models(request: Request) -> dict[str, Any]:
    settings = relay_of(request).settings
    return {
        "object": "list",
        "data": [
            {
                "id": spec.name,
                "object": "model",
                "created": 0,
                "owned_by": "inferrelay",
                "capabilities": [c.value for c in spec.capabilities],
                "engines": spec.engines,
            }
            for spec in settings.models
        ],
    }
