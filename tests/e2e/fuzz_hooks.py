"""Schemathesis hooks for tests/e2e/test_fuzz.py: real model names half the time, and generation kept short.

Loaded by the schemathesis CLI through SCHEMATHESIS_HOOKS; the generated bodies stay as the schema allows, except
that half of them name a model this server serves (else nearly every request would be a cheap 404) and that
generation is capped at a few tokens (the 135M model would otherwise write up to its whole context).
"""

from __future__ import annotations

from typing import Any

import schemathesis

CHAT = "smollm2-135m-instruct"
SERVED = {
    "/v1/chat/completions": CHAT,
    "/v1/completions": CHAT,
    "/v1/responses": CHAT,
    "/api/v1/runtime/generate": CHAT,
    "/v1/embeddings": "all-minilm-l6-v2",
}
MAX_TOKENS = 8
LIMITS = ("max_tokens", "max_completion_tokens", "max_output_tokens")


@schemathesis.hook
def map_body(context: Any, body: Any) -> Any:
    path = context.operation.path if context.operation is not None else ""
    if not isinstance(body, dict) or path not in SERVED:
        return body
    if isinstance(body.get("model"), str) and len(body["model"]) % 2 == 0:
        body["model"] = SERVED[path]
    if path != "/v1/embeddings":
        if not any(_is_int(body.get(key)) for key in LIMITS):
            body["max_output_tokens" if path == "/v1/responses" else "max_tokens"] = MAX_TOKENS
        for key in LIMITS:
            if _is_int(body.get(key)) and body[key] > MAX_TOKENS:
                body[key] = MAX_TOKENS
    if _is_int(body.get("n")) and body["n"] > 2:
        body["n"] = 2
    return body


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
