"""The one place that turns exceptions into OpenAI's error body and status."""

from __future__ import annotations

import json
import logging
import math
import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from inferrelay.errors import ErrorKind, InferrelayError, bad_request, classify
from inferrelay.outcome import ChainFailed, attempts_header, remedies_header

log = logging.getLogger(__name__)

_TYPE_TAG = re.compile(r"^(str|int|float|bool|none|list\[.*\]|dict\[.*\]|function-.*)$")
"""Pydantic names the member of a union in an error's location; the caller wants the field."""


def error_response(error: InferrelayError) -> JSONResponse:
    headers = {}
    if error.retry_after is not None:
        headers["retry-after"] = str(max(1, math.ceil(error.retry_after)))
    if isinstance(error, ChainFailed) and error.attempts:
        headers["x-inferrelay-attempts"] = attempts_header(error.attempts)
    if isinstance(error, ChainFailed) and error.remedies:
        headers["x-inferrelay-remediation"] = remedies_header(error.remedies)
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


def validation_error(exc: RequestValidationError, content_type: str = "application/json") -> InferrelayError:
    first = exc.errors()[0]
    location = [str(part) for part in first.get("loc", ()) if part != "body" and not _TYPE_TAG.match(str(part))]
    field = ".".join(location) or None
    if first.get("type") == "json_invalid":
        return bad_request(f"the request body is not valid JSON: {first.get('ctx', {}).get('error', '')}")
    message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    if first.get("type") == "missing":
        message = "this field is required"
    elif first.get("type") == "extra_forbidden":
        message = "unknown parameter"
    elif first.get("type") in ("model_attributes_type", "dict_type") and not location:
        if "json" not in content_type:
            return bad_request(f"send the body as JSON with content-type: application/json (got {content_type!r})")
        return bad_request("the request body must be a JSON object")
    return bad_request(f"{field}: {message}" if field else message, param=field)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(InferrelayError)
    async def _classified(request: Request, exc: InferrelayError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(validation_error(exc, request.headers.get("content-type", "none")))

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        kind = ErrorKind.NOT_FOUND if exc.status_code == 404 else ErrorKind.BAD_REQUEST
        error = InferrelayError(kind, f"{request.method} {request.url.path}: {exc.detail}")
        return JSONResponse(error.body(), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return error_response(classify(exc))


def sse_error(error: InferrelayError) -> str:
    """The error event that ends a stream which failed after its first token."""
    return f"data: {json.dumps(error.body())}\n\n"
