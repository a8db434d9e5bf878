"""`inferrelay keys create|list|revoke|usage`: the keys in `$INFERRELAY_HOME/keys.sqlite3`, which a running
server rereads on its next request (docs/keys.md)."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Optional

import typer

if TYPE_CHECKING:
    from inferrelay.access.keys import KeyStore

keys_app = typer.Typer(help="API keys: who may call, which models, how much.", no_args_is_help=True)
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _store() -> KeyStore:
    from inferrelay.access.keys import KeyStore
    from inferrelay.config.schema import default_home

    return KeyStore(default_home())


@keys_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="A name for people and for usage: letters, digits, '.', '_', '-'.")],
    models: Annotated[
        Optional[str], typer.Option(help="Comma-separated models the key may use (default: every model).")  # noqa: UP045
    ] = None,
    rpm: Annotated[Optional[int], typer.Option(help="Requests per minute.", min=1)] = None,  # noqa: UP045
    tpm: Annotated[Optional[int], typer.Option(help="Tokens per minute.", min=1)] = None,  # noqa: UP045
    budget_tokens: Annotated[
        Optional[int], typer.Option(help="Tokens in all; refused once spent.", min=1)  # noqa: UP045
    ] = None,
    expires: Annotated[Optional[str], typer.Option(help="Lifetime from now: 30d, 12h, 90m.")] = None,  # noqa: UP045
    admin: Annotated[bool, typer.Option("--admin", help="May also register, load, unload and manage keys.")] = False,
    timeout: Annotated[
        Optional[str], typer.Option(help="Caps each request's time budget: 30s, 5m (default: the model's).")  # noqa: UP045
    ] = None,
) -> None:
    """Make a key and print it, once: only its hash is stored."""
    from inferrelay.access.expiry import expires_at
    from inferrelay.config.units import parse_duration

    store = _store()
    try:
        when = expires_at(expires) if expires else None
        budget = parse_duration(timeout) if timeout else None
        listed = [m.strip() for m in models.split(",") if m.strip()] if models is not None else None
        key, secret = store.create(
            name,
            models=listed,
            rpm=rpm,
            tpm=tpm,
            budget_tokens=budget_tokens,
            expires_at=when,
            admin=admin,
            request_timeout=budget,
        )
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(secret)
    typer.echo(f"key {key.name!r} made; this is the only time it is shown. Send it as 'Authorization: Bearer KEY'.",
               err=True)  # fmt: skip


@keys_app.command("list")
def list_keys(as_json: AsJson = False) -> None:
    """Every key, with its limits and state; never a secret."""
    store = _store()
    keys = [key.public() for key in store.all()]
    if as_json:
        typer.echo(json.dumps(keys, indent=2))
        return
    rows = [("NAME", "KEY", "STATE", "ADMIN", "MODELS", "RPM", "TPM", "BUDGET", "EXPIRES")]
    for k in keys:
        expires = time.strftime("%Y-%m-%d %H:%M", time.gmtime(float(str(k["expires_at"])))) if k["expires_at"] else "-"
        models = ",".join(k["models"]) if isinstance(k["models"], list) else "*"  # type: ignore[arg-type]
        rows.append((str(k["name"]), str(k["key"]), str(k["state"]), "yes" if k["admin"] else "no", models,
                     _cell(k["rpm"]), _cell(k["tpm"]), _cell(k["budget_tokens"]), expires))  # fmt: skip
    _table(rows)


@keys_app.command("revoke")
def revoke(name: Annotated[str, typer.Argument(help="The key's name.")]) -> None:
    """Stop a key: the server refuses it from its next request."""
    store = _store()
    try:
        store.revoke(name)
    except KeyError:
        typer.echo(f"error: no key named {name!r}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"revoked {name}")


@keys_app.command("usage")
def usage_command(
    name: Annotated[Optional[str], typer.Argument(help="One key (default: every key).")] = None,  # noqa: UP045
    since: Annotated[Optional[str], typer.Option(help="Only the last 1d, 12h, 30m...")] = None,  # noqa: UP045
    as_json: AsJson = False,
) -> None:
    """Requests and tokens per key and model, from the request log."""
    from inferrelay.access.expiry import expires_at
    from inferrelay.access.usage import usage
    from inferrelay.config.schema import default_home

    try:
        since_s = expires_at(since, now=0.0) if since else None
    except ValueError as exc:
        typer.echo(f"error: --since: {exc}", err=True)
        raise typer.Exit(2) from None
    rows = usage(default_home(), name, since_s)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = [("KEY", "MODEL", "REQUESTS", "FAILED", "PROMPT_TOKENS", "COMPLETION_TOKENS", "TOTAL_TOKENS")]
    for r in rows:
        table.append((r["key"], r["model"], *(str(r[c]) for c in
                      ("requests", "failed", "prompt_tokens", "completion_tokens", "total_tokens"))))  # fmt: skip
    _table(table)


def _cell(value: object) -> str:
    return "-" if value is None else str(value)


def _table(rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
