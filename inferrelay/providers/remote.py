"""A remote OpenAI-compatible server (vLLM, Ollama, llama.cpp server, ...) behind one pooled httpx client.

Answers pass through unchanged except for `model`, which becomes the name the
caller asked for. Failures are classified here, once, into the taxonomy.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from inferrelay.config.providers import RemoteProvider
from inferrelay.errors import ErrorKind, InferrelayError


@dataclass
class UpstreamStream:
    """An upstream SSE stream whose first event has arrived; `rest` yields the others."""

    first: str
    rest: AsyncIterator[str]
    response: httpx.Response

    async def aclose(self) -> None:
        await self.response.aclose()


class RemoteClient:
    def __init__(self, name: str, config: RemoteProvider) -> None:
        self.name = name
        self.config = config
        headers = {}
        key = os.environ.get(config.api_key_env) if config.api_key_env else None
        if key:
            headers["authorization"] = f"Bearer {key}"
        timeout = httpx.Timeout(config.timeouts.read_s, connect=config.timeouts.connect_s)
        self._http = httpx.AsyncClient(base_url=config.base_url, headers=headers, timeout=timeout)

    async def post(self, path: str, body: dict[str, Any], model: str, requested: str) -> dict[str, Any]:
        try:
            response = await self._http.post(path, json={**body, "model": model})
        except httpx.HTTPError as exc:
            raise classify_http(self.name, exc) from exc
        if response.status_code >= 400:
            raise status_error(self.name, response)
        payload: dict[str, Any] = response.json()
        payload["model"] = requested
        return payload

    async def stream(self, path: str, body: dict[str, Any], model: str, requested: str) -> UpstreamStream:
        request = self._http.build_request("POST", path, json={**body, "model": model})
        try:
            response = await self._http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise classify_http(self.name, exc) from exc
        if response.status_code >= 400:
            await response.aread()
            await response.aclose()
            raise status_error(self.name, response)
        events = _sse_events(response, requested, self.name)
        try:
            first = await anext(events)  # a failure before the first event falls back
        except BaseException:
            await response.aclose()
            raise
        return UpstreamStream(first, events, response)

    async def health(self) -> bool:
        """GET health_endpoint on base_url's server (its root, not under /v1)."""
        root = httpx.URL(self.config.base_url).copy_with(path="/", query=None)
        try:
            response = await self._http.get(str(root.join(self.config.health_endpoint)), timeout=5)
        except httpx.HTTPError:
            return False
        return response.status_code < 400

    async def aclose(self) -> None:
        await self._http.aclose()


async def _sse_events(response: httpx.Response, requested: str, name: str) -> AsyncIterator[str]:
    """`data:` events with the model renamed; `[DONE]` ends the stream."""
    try:
        async for line in response.aiter_lines():
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
    except httpx.HTTPError as exc:
        raise classify_http(name, exc) from exc


def classify_http(name: str, exc: httpx.HTTPError) -> InferrelayError:
    if isinstance(exc, httpx.TimeoutException):
        return InferrelayError(ErrorKind.TIMEOUT, f"provider {name!r} timed out: {type(exc).__name__}")
    return InferrelayError(ErrorKind.TRANSIENT, f"provider {name!r} unreachable: {type(exc).__name__}: {exc}")


def status_error(name: str, response: httpx.Response) -> InferrelayError:
    """An upstream's HTTP error; a 4xx other than auth, not-found and 429 is the caller's mistake."""
    status = response.status_code
    try:
        detail = response.json().get("error", {}).get("message") or response.text[:300]
    except (ValueError, AttributeError):
        detail = response.text[:300]
    message = f"provider {name!r} answered {status}: {detail}"
    if status == 429:
        return InferrelayError(ErrorKind.RATE_LIMITED, message, retry_after=_retry_after(response))
    if status in (408, 504):
        return InferrelayError(ErrorKind.TIMEOUT, message)
    if status in (400, 413, 422):
        return InferrelayError(ErrorKind.BAD_REQUEST, message)
    if status in (502, 503):
        return InferrelayError(ErrorKind.TRANSIENT, message)
    return InferrelayError(ErrorKind.UPSTREAM_ERROR, message)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
