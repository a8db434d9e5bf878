"""What the server and an engine worker say to each other over their socket (pickled tuples, each naming its call).

Every message starts with the call's id, a number the server picks, so that several calls can be in flight to
one worker (as many as its model's `parallel`) and each reply finds its caller.

Server -> worker: (id, "load", engine reference, spec as JSON data, device, home), (id, "embed", (texts, truncate)),
(id, "generate", request), (id, "stream", request), (id, "cancel") for a stream or generation in flight, (id, "close").
Worker -> server: (id, "loaded", context length, bytes the load added, parallel), (id, "result", value),
(id, "piece", piece)... (id, "end"), (id, "error", kind, message, hint, param), (id, "closed").
A call's last reply is "loaded", "result", "end", "error" or "closed".
"""

from __future__ import annotations

from typing import Any

from inferrelay.errors import ErrorKind, InferrelayError

Request = tuple[Any, ...]
Reply = tuple[Any, ...]
FINAL = frozenset({"loaded", "result", "end", "error", "closed"})


def error_reply(call: int, error: InferrelayError) -> Reply:
    return (call, "error", error.kind.value, error.message, error.hint, error.param)


def raise_if_error(reply: Reply) -> Reply:
    """`reply` without its call id ((kind, values...)); an error reply raised as the error it carries."""
    if reply[0] == "error":
        _, kind, message, hint, param = reply
        raise InferrelayError(ErrorKind(kind), message, hint=hint, param=param)
    return reply
