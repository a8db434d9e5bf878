"""The console's routes: the page at /ui, and the read-only JSON it needs beyond the existing APIs.

The JSON lives under /api/v1, so the key gate asks for an admin key once keys exist; the page itself is open
(server/auth.py) and asks the operator for that key.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

from inferrelay.console import data
from inferrelay.errors import ErrorKind, InferrelayError, bad_request
from inferrelay.observe.queries import open_log
from inferrelay.server.relay import relay_of

STATIC = Path(__file__).parent / "static"
T = TypeVar("T")
router = APIRouter(prefix="/api/v1", include_in_schema=False)


def install_console(app: FastAPI) -> None:
    app.include_router(router)
    app.add_api_route("/ui", lambda: RedirectResponse("/ui/"), include_in_schema=False)
    app.mount("/ui/", StaticFiles(directory=STATIC, html=True), name="console")


async def _from_log(request: Request, read: Callable[[Any], T], empty: T) -> T:
    """`read` on a read-only connection to the request log, off the event loop; `empty` when there is no log."""

    def run() -> T:
        db = open_log(relay_of(request).settings.home)
        if db is None:
            return empty
        try:
            return read(db)
        finally:
            db.close()

    return await asyncio.to_thread(run)


@router.get("/requests")
async def requests(
    request: Request,
    model: str | None = None,
    outcome: str | None = None,
    since_s: float | None = Query(default=None, gt=0),
    limit: int = Query(default=100, ge=1, le=data.MAX_ROWS),
) -> dict[str, Any]:
    """The request log, newest first: by model, outcome (success, failed or an error kind) and age."""
    none: list[dict[str, Any]] = []
    found = await _from_log(request, lambda db: data.rows(db, model, outcome, since_s, limit), none)
    return {"requests": found}


@router.get("/requests/series")
async def request_series(
    request: Request, minutes: float = Query(default=10, gt=0, le=1440), bucket_s: float = Query(default=10, ge=1)
) -> dict[str, Any]:
    empty: dict[str, Any] = {"bucket_s": bucket_s, "points": [], "fallbacks": {}}
    return await _from_log(request, lambda db: data.series(db, minutes, bucket_s), empty)


@router.get("/requests/{request_id}")
async def request_detail(request_id: str, request: Request) -> dict[str, Any]:
    found = await _from_log(request, lambda db: data.one(db, request_id), None)
    if found is None:
        raise InferrelayError(ErrorKind.NOT_FOUND, f"no request {request_id!r} in the request log")
    return found


@router.get("/batch/status")
async def batch_status(output: str) -> dict[str, Any]:
    """A batch job's shards and progress, read from OUTPUT/_manifest.json (`inferrelay batch status`)."""
    try:
        status = await asyncio.to_thread(data.batch_status, Path(output).expanduser())
    except ValueError as exc:
        raise bad_request(str(exc), param="output") from None
    if status is None:
        raise InferrelayError(ErrorKind.NOT_FOUND, f"{output} holds no batch job")
    return status
