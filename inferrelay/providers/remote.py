"""A remote OpenAI-compatible server (vLLM, Ollama, llama.cpp server, ...) behind one pooled aiohttp session.

Answers pass through unchanged except for `model`, which becomes the name the
caller asked for. Failures are classified here, once, into the taxonomy.

aiohttp rather than httpx: on the gateway benchmark httpx's client layers
alone cost more than the whole 1 ms budget, and its client-wide cookie jar
would carry one caller's upstream cookies to the next (docs/performance.md).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
from yarl import URL

from inferrelay.config.providers import RemoteProvider
from inferrelay.errors import ErrorKind, InferrelayError
from inferrelay.observe import tracing
from inferrelay.observe.context import upstream_headers

JSON = {"content-type": "application/json"}


@dataclass
class UpstreamStream:
    """An upstream SSE stream whose first event has arrived; `rest` yields the others."""

    first: str
    rest: AsyncIterator[str]
    response: aiohttp.ClientResponse

    async def aclose(self) -> None:
        self.response.close()


class RemoteClient:
    """One connection pool per provider, opened on first use inside the server's event loop."""

    def __init__(self, name: str, config: RemoteProvider) -> None:
        self.name = name
        self.config = config
        self._base = URL(config.base_url.rstrip("/"))
        self._urls: dict[str, URL] = {}
        self._headers = {}
        key = os.environ.get(config.api_key_env) if config.api_key_env else None
        if key:
            self._headers["authorization"] = f"Bearer {key}"
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=config.timeouts.connect_s, sock_read=config.timeouts.read_s
        )
        self._session: aiohttp.ClientSession | None = None

    def _kept(self, body: dict[str, Any]) -> dict[str, Any]:
        """The body without the fields this provider's configuration drops (drop_fields)."""
        dropped = self.config.drop_fields
        return {k: v for k, v in body.items() if k not in dropped} if dropped else body

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers=self._headers,
                timeout=self._timeout,
                connector=aiohttp.TCPConnector(limit=100),
                cookie_jar=aiohttp.DummyCookieJar(),  # one caller's cookies must not reach the next
            )
        return self._session

    def _url(self, path: str) -> URL:
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = self._base / path
        return url

    async def post(self, path: str, body: dict[str, Any], model: str, requested: str) -> dict[str, Any]:
        data = json.dumps({**self._kept(body), "model": model})
        try:
            async with self._http().post(
                self._url(path), data=data, headers=tracing.inject(upstream_headers(JSON))
            ) as response:
                content = await response.read()
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
            raise classify_http(self.name, exc) from exc
        if response.status >= 400:
            raise status_error(self.name, response.status, content, response.headers.get("retry-after"))
        try:
            payload: dict[str, Any] = json.loads(content)
            payload["model"] = requested
        except (ValueError, TypeError) as exc:
            raise InferrelayError(
                ErrorKind.UPSTREAM_ERROR, f"provider {self.name!r} answered {response.status} without a JSON object"
            ) from exc
        return payload

    async def stream(self, path: str, body: dict[str, Any], model: str, requested: str) -> UpstreamStream:
        data = json.dumps({**self._kept(body), "model": model})
        try:
            response = await self._http().post(
                self._url(path), data=data, headers=tracing.inject(upstream_headers(JSON))
            )
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
            raise classify_http(self.name, exc) from exc
        if response.status >= 400:
            try:
                content = await response.read()
            finally:
                response.close()
            raise status_error(self.name, response.status, content, response.headers.get("retry-after"))
        events = _sse_events(response, requested, self.name)
        try:
            first = await anext(events)  # a failure before the first event falls back
        except BaseException:
            response.close()
            raise
        return UpstreamStream(first, events, response)

    async def health(self) -> bool:
        """GET health_endpoint on base_url's server (its root, not under /v1)."""
        url = self._base.with_path("/").join(URL(self.config.health_endpoint.lstrip("/")))
        try:
            async with self._http().get(url, timeout=aiohttp.ClientTimeout(total=5)) as response:
                await response.read()
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError):
            return False
        return response.status < 400

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


async def _lines(response: aiohttp.ClientResponse) -> AsyncIterator[str]:
    """The body's lines, however long, however the chunks fall."""
    pending = b""
    async for chunk in response.content.iter_any():
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield line.rstrip(b"\r").decode()
    if pending:
        yield pending.rstrip(b"\r").decode()


async def _sse_events(response: aiohttp.ClientResponse, requested: str, name: str) -> AsyncIterator[str]:
    """`data:` events with the model renamed; `[DONE]` ends the stream."""
    try:
        async for line in _lines(response):
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                return
            try:
                event = json.loads(data)
            except json.JSONDecodeError:
                yield f"data: {data}\n\n"
                continue
            if isinstance(event, dict) and "model" in event:
                event["model"] = requested
            yield f"data: {json.dumps(event)}\n\n"
    except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
        raise classify_http(name, exc) from exc


def classify_http(name: str, exc: BaseException) -> InferrelayError:
    if isinstance(exc, asyncio.TimeoutError):  # aiohttp's connect and read timeouts included
        return InferrelayError(ErrorKind.TIMEOUT, f"provider {name!r} timed out: {type(exc).__name__}")
    return InferrelayError(ErrorKind.TRANSIENT, f"provider {name!r} unreachable: {type(exc).__name__}: {exc}")


def status_error(name: str, status: int, content: bytes, retry_after: str | None) -> InferrelayError:
    """An upstream's HTTP error; a 4xx other than auth, not-found and 429 is the caller's mistake."""
    text = content.decode(errors="replace")
    try:
        error = json.loads(text).get("error", {})
        detail, code, param = error.get("message") or text[:300], error.get("code"), error.get("param")
    except (ValueError, AttributeError):
        detail, code, param = text[:300], None, None
    message = f"provider {name!r} answered {status}: {detail}"
    if status == 429:
        return InferrelayError(ErrorKind.RATE_LIMITED, message, retry_after=_seconds(retry_after))
    if status in (408, 504):
        return InferrelayError(ErrorKind.TIMEOUT, message)
    if status in (400, 413, 422):
        kind = ErrorKind.CONTEXT_LENGTH if code == "context_length_exceeded" else ErrorKind.BAD_REQUEST
        return InferrelayError(kind, message, param=param if isinstance(param, str) else None)
    if status in (502, 503):
        return InferrelayError(ErrorKind.TRANSIENT, message)
    return InferrelayError(ErrorKind.UPSTREAM_ERROR, message)


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
