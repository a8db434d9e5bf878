"""The key gate: an ASGI middleware in front of every route.

While no key exists every route is open (a loopback-only server, or one started with --insecure-no-auth). Once
one exists, every `/v1` and `/api` request needs `Authorization: Bearer KEY` or `x-api-key: KEY`:
- open to anyone: /health, /ready, the API description (/openapi.json, /docs), the console's page (/ui), and
  /metrics unless `runtime.metrics_need_key` is set;
- any active key: /v1/* (the models its list allows; access/caller.py) and POST /api/v1/runtime/generate;
- an admin key: everything else under /api (register, load, unload, stats, keys, engines, providers).
401 for a missing, unknown, revoked or expired key; 403 for a key that may not; 429 past its rpm, tpm or budget.
With a shared state (Redis) the allowance is every server's, asked in one round trip, and an answer leaves only once
its tokens are counted there; without one it is this process's own, checked in place (access/quota.py).
"""

from __future__ import annotations

from typing import Any

from inferrelay.access import caller
from inferrelay.access.keys import Key, KeyStore
from inferrelay.access.quota import KeyQuota
from inferrelay.errors import ErrorKind, InferrelayError
from inferrelay.server.errors import error_response

OPEN_PATHS = frozenset({"/health", "/ready", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})
INFERENCE_API = frozenset({("POST", "/api/v1/runtime/generate")})


class KeyGate:
    def __init__(self, app: Any, store: KeyStore, quota: KeyQuota, metrics_need_key: bool) -> None:
        self.app = app
        self.store = store
        self.quota = quota
        self.metrics_need_key = metrics_need_key

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or self._open(scope["path"]) or not self.store.has_keys():
            await self.app(scope, receive, send)
            return
        try:
            key = self._admit(scope)
            if self.quota.shared:
                await self.quota.admit_shared(key)
        except InferrelayError as error:
            await error_response(error)(scope, receive, send)
            return
        token = caller.current.set(key)
        try:
            await self.app(scope, receive, self._after_counting(key, send) if self.quota.shared else send)
        finally:
            caller.current.reset(token)

    def _after_counting(self, key: Key, send: Any) -> Any:
        """`send`, holding an answer's last piece until its tokens are in the shared count."""

        async def counted(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                await self.quota.settled(key.name)
            await send(message)

        return counted

    def _open(self, path: str) -> bool:
        console = path == "/ui" or path.startswith("/ui/")  # the page; the data it reads needs an admin key
        return path in OPEN_PATHS or console or (path == "/metrics" and not self.metrics_need_key)

    def _admit(self, scope: dict[str, Any]) -> Key:
        secret = presented_key(scope["headers"])
        if secret is None:
            raise InferrelayError(ErrorKind.UNAUTHORIZED, "this server needs an API key and the request sent none")
        key = self.store.find(secret)
        if key is None:
            raise InferrelayError(ErrorKind.UNAUTHORIZED, "the API key is not valid")
        state = key.state()
        if state != "active":
            raise InferrelayError(ErrorKind.UNAUTHORIZED, f"the API key {key.name!r} is {state}")
        path = scope["path"]
        needs_admin = path.startswith("/api/") and (scope["method"], path) not in INFERENCE_API
        if needs_admin and not key.admin:
            raise InferrelayError(
                ErrorKind.FORBIDDEN, f"{scope['method']} {path} needs an admin key", code="admin_key_required"
            )
        if not self.quota.shared:
            self.quota.admit(key)  # in process: checked in place, no await (shared: `admit_shared`, by the caller)
        return key


def presented_key(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The key from `Authorization: Bearer KEY`, else from `x-api-key`."""
    fallback = None
    for name, value in headers:
        if name == b"authorization":
            scheme, _, credential = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and credential.strip():
                return credential.strip()
        elif name == b"x-api-key" and value.strip():
            fallback = value.decode("latin-1").strip()
    return fallback
