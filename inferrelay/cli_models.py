"""`inferrelay models list|show|register|load|unload`: against a running server (--url), else the local registry."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

models_app = typer.Typer(help="Register, load, unload and inspect models.", no_args_is_help=True)

Url = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option(help="A running server, e.g. http://127.0.0.1:8000; without it, the local registry."),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _call(url: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url.rstrip("/") + path, data=data, method=method, headers={"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read())["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = str(exc)
        typer.echo(f"error ({exc.code}): {message}", err=True)
        raise typer.Exit(1) from None
    except urllib.error.URLError as exc:
        typer.echo(f"error: cannot reach {url}: {exc.reason}", err=True)
        raise typer.Exit(1) from None


def _local_registry() -> Any:
    from inferrelay.config.embedded import embedded_models
    from inferrelay.config.schema import default_home
    from inferrelay.runtime.registry import ModelRegistry

    registry = ModelRegistry(default_home())
    registry.seed(embedded_models())
    return registry


def _print_table(models: list[dict[str, Any]]) -> None:
    rows = [("NAME", "STATE", "CAPABILITIES", "ENGINES", "SOURCE")]
    for m in models:
        capabilities, engines = ",".join(m["capabilities"]), ",".join(m["engines"])
        rows.append((m["name"], m.get("state", "-"), capabilities, engines, m["source"]))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


@models_app.command("list")
def list_models(url: Url = None, as_json: AsJson = False) -> None:
    """Every model: registered, declared by the configuration, and embedded."""
    if url:
        models = _call(url, "GET", "/api/v1/runtime/models")["models"]
    else:
        registry = _local_registry()
        models = [r.as_dict() for r in registry.list()]
        registry.close()
    if as_json:
        typer.echo(json.dumps(models, indent=2))
    else:
        _print_table(models)


@models_app.command("show")
def show(name: str, url: Url = None) -> None:
    """One model, as JSON: its registration and, from a server, its state and memory."""
    if url:
        typer.echo(json.dumps(_call(url, "GET", f"/api/v1/runtime/models/{name}"), indent=2))
        return
    from inferrelay.config.schema import default_home
    from inferrelay.tune.book import TuningBook

    registry = _local_registry()
    registration = registry.get(name)
    registry.close()
    if registration is None:
        typer.echo(f"error: no model named {name!r} in the local registry", err=True)
        raise typer.Exit(1)
    tunings = [t.view() for t in TuningBook(default_home()).of(name)]
    typer.echo(json.dumps({**registration.as_dict(), "tuning": tunings}, indent=2))


@models_app.command("register")
def register(
    name: str,
    source: Annotated[str, typer.Argument(help="A GGUF file, a Hugging Face or sentence-transformers folder, ...")],
    capability: Annotated[Optional[list[str]], typer.Option(help="chat, completion or embeddings")] = None,  # noqa: UP045
    engine: Annotated[Optional[list[str]], typer.Option(help="The engine chain, first first")] = None,  # noqa: UP045
    context_length: Annotated[Optional[int], typer.Option()] = None,  # noqa: UP045
    keep_alive: Annotated[Optional[str], typer.Option(help="e.g. 5m, 0, -1 (forever)")] = None,  # noqa: UP045
    pinned: Annotated[bool, typer.Option(help="Never evicted")] = False,
    config: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(
            help="Configuration directory whose runtime.model_roots apply (local registry only; or INFERRELAY_CONFIG)."
        ),
    ] = None,
    url: Url = None,
) -> None:
    """Check the source and register it under NAME."""
    body: dict[str, Any] = {"name": name, "source": source, "pinned": pinned}
    optional = {"capabilities": capability, "engines": engine, "context_length": context_length}
    body |= {key: value for key, value in {**optional, "keep_alive": keep_alive}.items() if value}
    if url:
        typer.echo(json.dumps(_call(url, "POST", "/api/v1/runtime/models/register", body), indent=2))
        return
    _register_locally(body, config)


def _register_locally(body: dict[str, Any], config: Path | None) -> None:
    from inferrelay.cli_config import load_config
    from inferrelay.errors import InferrelayError
    from inferrelay.runtime.registration import registration_spec

    settings = load_config(config)
    try:
        registry = _local_registry()
        if settings.model(body["name"]) is not None and registry.get(body["name"]) is None:
            typer.echo(f"error: {body['name']!r} is declared by the configuration; choose another name", err=True)
            raise typer.Exit(1)
        spec = registration_spec(body, settings.runtime.roots(settings.home))
        typer.echo(json.dumps(registry.add(spec).as_dict(), indent=2))
        registry.close()
    except InferrelayError as exc:
        typer.echo(f"error ({exc.status}): {exc.message}", err=True)
        raise typer.Exit(1) from None


@models_app.command("load")
def load(name: str, url: Url = None, keep_alive: Annotated[Optional[str], typer.Option()] = None) -> None:  # noqa: UP045
    """Load NAME on a running server now, instead of on its first request."""
    body: dict[str, Any] = {"name": name} | ({"keep_alive": keep_alive} if keep_alive else {})
    typer.echo(json.dumps(_call(_required(url), "POST", "/api/v1/runtime/models/load", body), indent=2))


@models_app.command("unload")
def unload(name: str, url: Url = None) -> None:
    """Unload NAME from a running server and free its memory."""
    typer.echo(json.dumps(_call(_required(url), "POST", "/api/v1/runtime/models/unload", {"name": name}), indent=2))


def _required(url: str | None) -> str:
    if not url:
        typer.echo("error: load and unload act on a running server: pass --url http://HOST:PORT", err=True)
        raise typer.Exit(2)
    return url
