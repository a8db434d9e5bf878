"""An ASGI middleware that refuses a request body past `runtime.limits.max_body_bytes` while it is read.

Content-Length is checked first (refused before a byte of the body is read); a chunked body is counted as it
arrives and refused at the first chunk past the limit, never buffered whole. Either way: 413, OpenAI's error body.
"""

from __future__ import annotations

import contextlib
from typing import Any

from inferrelay.errors import ErrorKind, InferrelayError
from inferrelay.server.errors import error_response

TOO_LARGE = 413


class BodyTooLarge(Exception):
    """Raised from `receive` past the limit; whatever the app makes of it, the answer is the 413."""


class BodyLimit:
    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope["headers"])
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, receive, send, declared)
            return
        received, over, started = 0, False, False

        async def counted() -> dict[str, Any]:
            nonlocal received, over
            message: dict[str, Any] = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    over = True
                    raise BodyTooLarge
            return message

        async def guarded(message: dict[str, Any]) -> None:
            nonlocal started
            if over and not started:
                return  # the app's own answer to the failed read: the 413 replaces it
            started = started or message["type"] == "http.response.start"
            await send(message)

        with contextlib.suppress(BodyTooLarge):
            await self.app(scope, counted, guarded)
        if over and not started:
            await self._refuse(scope, receive, send, None)

    async def _refuse(self, scope: dict[str, Any], receive: Any, send: Any, declared: int | None) -> None:
        size = f"{declared} bytes" if declared is not None else f"more than {self.max_bytes} bytes"
        error = InferrelayError(
            ErrorKind.BAD_REQUEST,
            f"the request body holds {size}; this server takes at most {self.max_bytes} "
            "(runtime.limits.max_body_bytes)",
            code="request_too_large",
        )
        response = error_response(error)
        response.status_code = TOO_LARGE
        response.headers["connection"] = "close"  # the rest of the body is not read
        await response(scope, receive, send)


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
