"""`GET /metrics`: Prometheus's text format (docs/observability.md)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from inferrelay.errors import ErrorKind, InferrelayError
from inferrelay.server.relay import relay_of

router = APIRouter()


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    exposed = relay_of(request).observer.metrics
    if exposed is None:
        raise InferrelayError(ErrorKind.NOT_FOUND, "metrics are off (runtime.metrics: false)")
    return Response(exposed.exposition(), media_type=CONTENT_TYPE_LATEST)
