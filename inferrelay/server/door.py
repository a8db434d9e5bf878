"""The door: what one request's JSON may hold, checked once on the parsed body, before validation and any model.

Every string must be valid Unicode (a lone surrogate, JSON's "\\ud800", is not: no tokenizer reads it), all the
strings together hold at most `max_text_chars`, and the fields that multiply work (messages, stop, input) are
counted. A request past a limit is the caller's mistake: a 400 naming the field, in milliseconds.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import Request

from inferrelay.config.limits import RequestLimits
from inferrelay.errors import ErrorKind, InferrelayError
from inferrelay.server.relay import relay_of

ARRAY_TOO_LONG = "array_above_max_length"  # OpenAI's codes for the same mistakes
STRING_TOO_LONG = "string_above_max_length"


def refuse(message: str, param: str | None, code: str) -> InferrelayError:
    return InferrelayError(ErrorKind.BAD_REQUEST, message, param=param, code=code)


async def check_request(request: Request) -> None:
    """An app-wide dependency: runs after FastAPI parsed the body (cached on the request), before validation."""
    body = await _parsed_body(request)
    if body is not None:
        check_body(body, relay_of(request).settings.runtime.limits)


async def _parsed_body(request: Request) -> Any:
    if request.method not in ("POST", "PUT", "PATCH") or not await request.body():
        return None
    content_type = request.headers.get("content-type", "application/json")
    if "json" not in content_type:
        return None
    try:
        return await request.json()  # the route's own parse, cached; parsed here only for a route with no body
    except (ValueError, RecursionError):
        return None  # not JSON: the route's validation says so, where it has a body at all


def check_body(body: Any, limits: RequestLimits) -> None:
    total, valid = _text_chars(body, limits.max_text_chars)
    if not valid:
        param = _first_invalid(body)
        raise refuse(
            f"{param or 'the body'}: the string is not valid Unicode (a lone UTF-16 surrogate such as \\ud800?); "
            "send UTF-8 text, with surrogates only in pairs",
            param,
            "invalid_unicode",
        )
    if isinstance(body, dict):
        _check_fields(body, limits)  # the field that is past its limit, where one is named
    if total > limits.max_text_chars:
        raise refuse(
            f"the request holds more than {limits.max_text_chars} characters of text "
            "(runtime.limits.max_text_chars); send less at once",
            None,
            "request_too_large",
        )


def _text_chars(body: Any, limit: int) -> tuple[int, bool]:
    """Characters in every string (keys too), stopping past `limit`; and False at the first invalid one."""
    total, stack = 0, [body]
    while stack and total <= limit:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item)
            if not _unicode(item):
                return total, False
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return total, True


def _unicode(text: str) -> bool:
    if text.isascii():  # a flag CPython keeps: no scan
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _first_invalid(body: Any) -> str | None:
    """The dotted path of the first string (or key) that is not valid Unicode, as validation errors name it."""
    for path, item in _strings(body, ()):
        if not _unicode(item):
            return ".".join(path) or None
    return None


def _strings(value: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield (*path, _printable(key)), key
            yield from _strings(item, (*path, _printable(key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, (*path, str(index)))


def _printable(key: str) -> str:
    return key if _unicode(key) else key.encode("utf-8", "backslashreplace").decode()


def _check_fields(body: dict[str, Any], limits: RequestLimits) -> None:
    messages, stop, inputs = body.get("messages"), body.get("stop"), body.get("input")
    if isinstance(messages, list):
        _at_most(messages, limits.max_messages, "messages", "max_messages")
    if isinstance(stop, list):
        _at_most(stop, limits.max_stop, "stop", "max_stop")
    _each_at_most(stop, limits.max_stop_chars, "stop", "max_stop_chars")
    if isinstance(inputs, list) and any(isinstance(item, dict) for item in inputs):
        _at_most(inputs, limits.max_messages, "input", "max_messages")  # the Responses API's conversation
        return
    if isinstance(inputs, list):
        _at_most(inputs, limits.max_inputs, "input", "max_inputs")
    _each_at_most(inputs, limits.max_input_chars, "input", "max_input_chars")


def _at_most(items: list[Any], limit: int, param: str, setting: str) -> None:
    if len(items) > limit:
        raise refuse(
            f"{param}: {len(items)} items, and this server takes at most {limit} (runtime.limits.{setting})",
            param,
            ARRAY_TOO_LONG,
        )


def _each_at_most(value: Any, limit: int, param: str, setting: str) -> None:
    """A string, or each string of a list, at most `limit` characters long."""
    named = [(param, value)] if isinstance(value, str) else []
    if isinstance(value, list):
        named = [(f"{param}.{index}", item) for index, item in enumerate(value)]
    for where, item in named:
        if isinstance(item, str) and len(item) > limit:
            raise refuse(
                f"{where}: {len(item)} characters, and this server takes at most {limit} (runtime.limits.{setting})",
                where,
                STRING_TOO_LONG,
            )
