"""The request being served, for code far from the route: its id goes with every request to a provider."""

from __future__ import annotations

from contextvars import ContextVar

REQUEST_ID_HEADER = "x-request-id"

request_id: ContextVar[str | None] = ContextVar("inferrelay_request_id", default=None)


def upstream_headers(base: dict[str, str]) -> dict[str, str]:
    """`base` plus the current request's id, so a provider's logs can be matched with ours."""
    current = request_id.get()
    return {**base, REQUEST_ID_HEADER: current} if current else dict(base)
