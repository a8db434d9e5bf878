"""`GET /metrics`: Prometheus's text format (docs/observability.md)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from inferrelay.server.relay import relay_of

router = APIRouter()


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    return Response(relay_of(request).observer.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
