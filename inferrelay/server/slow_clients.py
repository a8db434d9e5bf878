"""Slow and idle clients are timed out: headers (an HTTP protocol with a deadline) and body (an ASGI middleware).

uvicorn closes an idle connection only between two requests (timeout_keep_alive); a connection that sends half
a request line and stalls, or a body a byte a minute, would be held until the file-descriptor limit. Limits are
`runtime.connections` (config/connections.py; docs/operations.md).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import HTTPException

from inferrelay.config.connections import ConnectionLimits

log = logging.getLogger(__name__)


class BodyTooSlow(HTTPException):
    def __init__(self, timeout: float) -> None:
        detail = f"the request body did not arrive within {timeout:g}s (runtime.connections.body_timeout)"
        super().__init__(408, detail, headers={"connection": "close"})


class BodyDeadline:
    """The whole body must arrive within `timeout` of the app being called (after the headers): else 408."""

    def __init__(self, app: Any, timeout: float) -> None:
        self.app = app
        self.timeout = timeout

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        complete = False

        async def bounded() -> dict[str, Any]:
            nonlocal complete
            if complete:  # after the body: waiting for a disconnect is not bounded
                return dict(await receive())
            try:
                message = dict(await asyncio.wait_for(receive(), max(0.0, deadline - loop.time())))
            except asyncio.TimeoutError:
                raise BodyTooSlow(self.timeout) from None
            complete = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        await self.app(scope, bounded, send)


class HeadTimer:
    """One deadline for a request's head: armed when a head may start, disarmed once it is complete."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float, transport: asyncio.BaseTransport) -> None:
        self.loop = loop
        self.timeout = timeout
        self.transport = transport
        self.handle: asyncio.TimerHandle | None = None

    def arm(self) -> None:
        if self.handle is None:
            self.handle = self.loop.call_later(self.timeout, self._expired)

    def disarm(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None

    def _expired(self) -> None:
        self.handle = None
        if not self.transport.is_closing():
            log.info("closed a connection that sent no whole request head in %gs", self.timeout)
            self.transport.close()


def head_deadline_protocol(timeout: float) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol (httptools when installed, as uvicorn's `auto` picks, else h11) with a head timer."""
    try:
        import httptools  # noqa: F401
    except ImportError:
        return _h11_protocol(timeout)
    return _httptools_protocol(timeout)


def _httptools_protocol(timeout: float) -> type[asyncio.Protocol]:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class HeadDeadlineHttpTools(HttpToolsProtocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self.head_timer = HeadTimer(self.loop, timeout, transport)
            self.head_timer.arm()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self.head_timer.arm()

        def on_headers_complete(self) -> None:
            self.head_timer.disarm()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self.head_timer.disarm()
            super().connection_lost(exc)

    return HeadDeadlineHttpTools


def _h11_protocol(timeout: float) -> type[asyncio.Protocol]:
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeadDeadlineH11(H11Protocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self.head_timer = HeadTimer(self.loop, timeout, transport)
            self.head_timer.arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is h11.IDLE:  # a head has begun and is not complete yet
                self.head_timer.arm()
            else:
                self.head_timer.disarm()

        def connection_lost(self, exc: Exception | None) -> None:
            self.head_timer.disarm()
            super().connection_lost(exc)

    return HeadDeadlineH11


def uvicorn_options(limits: ConnectionLimits) -> dict[str, Any]:
    """What `uvicorn.run` needs beyond the app, host and port."""
    return {
        "http": head_deadline_protocol(limits.header_timeout),
        "timeout_keep_alive": limits.keep_alive_timeout,
        "limit_concurrency": limits.max_connections,
    }
