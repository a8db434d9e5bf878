"""The keys' admin API: `/api/v1/keys` (an admin key; server/auth.py), the same as `inferrelay keys`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import Field, field_validator

from inferrelay.access.expiry import expires_at
from inferrelay.access.keys import MAX_LIMIT, KeyExistsError
from inferrelay.access.usage import usage
from inferrelay.config.strict import Strict
from inferrelay.config.units import Duration
from inferrelay.errors import ErrorKind, InferrelayError, bad_request
from inferrelay.server.relay import relay_of

router = APIRouter(prefix="/api/v1/keys")


class CreateKey(Strict):
    name: str = Field(min_length=1, max_length=64)
    models: list[str] | None = None
    rpm: int | None = Field(default=None, ge=1, le=MAX_LIMIT)
    tpm: int | None = Field(default=None, ge=1, le=MAX_LIMIT)
    budget_tokens: int | None = Field(default=None, ge=1, le=MAX_LIMIT)
    expires: str | None = Field(default=None, description="from now: '30d', '12h', '90m'")
    admin: bool = False
    request_timeout: Duration | None = Field(
        default=None, description="caps each request's time budget (seconds or '30s'); absent: the model's"
    )

    @field_validator("expires")
    @classmethod
    def _lifetime(cls, value: str | None) -> str | None:
        if value is not None:
            expires_at(value)  # refuses what it cannot read, with the reason
        return value


@router.get("")
async def list_keys(request: Request) -> dict[str, Any]:
    return {"object": "list", "data": [key.public() for key in relay_of(request).keys.all()]}


@router.post("", status_code=201)
async def create_key(body: CreateKey, request: Request) -> dict[str, Any]:
    relay = relay_of(request)
    try:
        key, secret = relay.keys.create(
            body.name, models=body.models, rpm=body.rpm, tpm=body.tpm, budget_tokens=body.budget_tokens,
            expires_at=expires_at(body.expires) if body.expires else None, admin=body.admin,
            request_timeout=body.request_timeout,
        )  # fmt: skip
    except KeyExistsError as exc:
        raise InferrelayError(ErrorKind.CONFLICT, str(exc), param="name") from None
    except ValueError as exc:
        raise bad_request(str(exc)) from None
    return {**key.public(), "secret": secret}


@router.delete("/{name}")
async def revoke_key(name: str, request: Request) -> dict[str, Any]:
    try:
        return relay_of(request).keys.revoke(name).public()
    except KeyError:
        raise InferrelayError(ErrorKind.NOT_FOUND, f"no key named {name!r}") from None


@router.get("/{name}/usage")
async def key_usage(name: str, request: Request, since: str | None = None) -> dict[str, Any]:
    relay = relay_of(request)
    key = relay.keys.named(name)
    if key is None:
        raise InferrelayError(ErrorKind.NOT_FOUND, f"no key named {name!r}")
    since_s = _since(since)
    rows = usage(relay.settings.home, name, since_s)
    return {
        "key": key.public(), "since_s": since_s, "data": rows, "spent_tokens": await relay.quota.spent_shared(name),
        "total_tokens": sum(r["total_tokens"] for r in rows),
    }  # fmt: skip


def _since(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return expires_at(text, now=0.0)
    except ValueError as exc:
        raise bad_request(f"since: {exc}", param="since") from None
