"""What the server and an engine worker say to each other over their socket (pickled tuples, one request at a time).

Server -> worker: ("load", engine reference, spec as JSON data, device, home), ("embed", texts),
("generate", request), ("stream", request), ("cancel",) during a stream, ("close",).
Worker -> server: ("loaded", context length, bytes the load added), ("result", value), ("piece", piece)... ("end",),
("error", kind, message, hint, param), ("closed",).
"""

from __future__ import annotations

from typing import Any

from inferrelay.errors import ErrorKind, InferrelayError

Request = tuple[Any, ...]
Reply = tuple[Any, ...]


def error_reply(error: InferrelayError) -> Reply:
    return ("error", error.kind.value, error.message, error.hint, error.param)


def raise_if_error(reply: Reply) -> Reply:
    if reply[0] == "error":
        _, kind, message, hint, param = reply
        raise InferrelayError(ErrorKind(kind), message, hint=hint, param=param)
    return reply
