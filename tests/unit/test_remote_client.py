"""The provider client against a real HTTP server on 127.0.0.1 (aiohttp.web, in this process).

What it must keep: the caller's model name in every answer, the API key from
the environment, no cookie carried from one caller to the next, SSE events
whatever way the bytes are chunked, and each failure classified.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web

from inferrelay.config.providers import RemoteProvider, Timeouts
from inferrelay.errors import ErrorKind, InferrelayError
from inferrelay.providers.remote import RemoteClient, status_error

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def upstream(routes: dict[str, Handler], host: str = "127.0.0.1", **provider: Any) -> AsyncIterator[RemoteClient]:
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_route("*", path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    client = RemoteClient("up", RemoteProvider(type="vllm", base_url=f"http://{host}:{port}/v1", **provider))
    try:
        yield client
    finally:
        await client.aclose()
        await runner.cleanup()


def run(coroutine: Awaitable[Any]) -> Any:
    return asyncio.run(coroutine)  # type: ignore[arg-type]


def test_answer_keeps_the_callers_model_name_and_forwards_the_body(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UP_KEY", "sk-secret")
    seen: list[tuple[dict[str, Any], str | None, str | None]] = []

    async def chat(request: web.Request) -> web.Response:
        seen.append((await request.json(), request.headers.get("authorization"), request.headers.get("cookie")))
        response = web.json_response({"id": "x", "model": "served-name", "choices": []})
        response.set_cookie("session", "caller-one")
        return response

    async def go() -> list[dict[str, Any]]:
        # a host name, not an IP: cookie jars keep cookies only for host names
        async with upstream({"/v1/chat/completions": chat}, host="localhost", api_key_env="UP_KEY") as client:
            body = {"model": "asked", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
            return [await client.post("chat/completions", body, "served-name", "asked") for _ in range(2)]

    answers = run(go())
    assert [a["model"] for a in answers] == ["asked", "asked"]
    assert seen[0][0] == {"model": "served-name", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
    assert seen[0][1] == "Bearer sk-secret"
    assert seen[1][2] is None  # the first answer's cookie did not ride along with the second request


def test_stream_events_survive_any_chunking_and_long_lines() -> None:
    long_text = "x" * 200_000  # longer than aiohttp's default line buffer
    events = [{"model": "served", "choices": [{"delta": {"content": text}}]} for text in ("a", long_text, "b")]
    wire = "".join(f"data: {json.dumps(e)}\r\n\r\n" for e in events) + "data: [DONE]\n\n"

    async def chat(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        raw = wire.encode()
        for start in range(0, len(raw), 7):  # split mid-line, mid-CRLF, mid-character
            await response.write(raw[start : start + 7] if start < 140 else raw[start:])
            if start >= 140:
                break
        await response.write_eof()
        return response

    async def go() -> list[str]:
        async with upstream({"/v1/chat/completions": chat}) as client:
            opened = await client.stream("chat/completions", {"stream": True}, "served", "asked")
            received = [opened.first] + [event async for event in opened.rest]
            await opened.aclose()
            return received

    received = run(go())
    parsed = [json.loads(event.removeprefix("data: ")) for event in received]
    assert [p["choices"][0]["delta"]["content"] for p in parsed] == ["a", long_text, "b"]
    assert {p["model"] for p in parsed} == {"asked"}
    assert all(event.endswith("\n\n") for event in received)


def test_a_slow_upstream_is_a_timeout_and_a_closed_port_is_transient() -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(2)
        return web.json_response({})

    async def go() -> tuple[InferrelayError, InferrelayError]:
        async with upstream({"/v1/chat/completions": slow}, timeouts=Timeouts(read_s=0.2)) as client:
            with pytest.raises(InferrelayError) as slow_error:
                await client.post("chat/completions", {}, "m", "m")
        closed = RemoteClient("gone", RemoteProvider(type="vllm", base_url="http://127.0.0.1:9/v1"))
        try:
            with pytest.raises(InferrelayError) as closed_error:
                await closed.post("chat/completions", {}, "m", "m")
        finally:
            await closed.aclose()
        return slow_error.value, closed_error.value

    slow_error, closed_error = run(go())
    assert slow_error.kind is ErrorKind.TIMEOUT
    assert closed_error.kind is ErrorKind.TRANSIENT
    assert "'gone' unreachable" in closed_error.message


def test_health_asks_the_server_root_not_the_api_prefix() -> None:
    async def healthy(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def go() -> tuple[bool, bool]:
        async with upstream({"/health": healthy}) as client:
            good = await client.health()
        async with upstream({"/elsewhere": healthy}) as client:
            bad = await client.health()
        return good, bad

    assert run(go()) == (True, False)


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (429, ErrorKind.RATE_LIMITED),
        (408, ErrorKind.TIMEOUT),
        (504, ErrorKind.TIMEOUT),
        (400, ErrorKind.BAD_REQUEST),
        (422, ErrorKind.BAD_REQUEST),
        (502, ErrorKind.TRANSIENT),
        (503, ErrorKind.TRANSIENT),
        (401, ErrorKind.UPSTREAM_ERROR),
        (500, ErrorKind.UPSTREAM_ERROR),
    ],
)
def test_upstream_statuses_map_to_kinds(status: int, kind: ErrorKind) -> None:
    body = json.dumps({"error": {"message": "slow down"}}).encode()
    error = status_error("up", status, body, "2")
    assert error.kind is kind
    assert f"answered {status}: slow down" in error.message
    assert error.retry_after == (2.0 if status == 429 else None)


def test_an_upstream_context_overflow_keeps_its_kind_and_param() -> None:
    """Another inferrelay, or OpenAI, says context_length_exceeded: the caller gets that code back, not bad_request."""
    body = {"error": {"message": "too long", "param": "messages", "code": "context_length_exceeded"}}
    error = status_error("up", 400, json.dumps(body).encode(), None)
    assert (error.kind, error.param) == (ErrorKind.CONTEXT_LENGTH, "messages")
    assert error.body()["error"]["code"] == "context_length_exceeded"
    vllm = {"object": "error", "message": "bad", "type": "BadRequestError", "param": None, "code": 400}
    assert status_error("up", 400, json.dumps(vllm).encode(), None).kind is ErrorKind.BAD_REQUEST


def test_an_error_body_that_is_not_json_is_quoted() -> None:
    error = status_error("up", 502, b"<html>bad gateway</html>", None)
    assert "<html>bad gateway</html>" in error.message
