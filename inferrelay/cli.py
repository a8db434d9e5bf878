"""The command line: `inferrelay serve`, `engines`, `config`, `models`, `batch`, `--version`."""

from __future__ import annotations

import ipaddress
import json
import os
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from inferrelay import __version__
from inferrelay.cli_batch import batch_app
from inferrelay.cli_config import BAD_CONFIG, CONFIG_ENV, config_dir, load_config
from inferrelay.cli_keys import keys_app
from inferrelay.cli_models import models_app
from inferrelay.cli_tune import tune_command

app = typer.Typer(help="inferrelay: one OpenAI-compatible endpoint that keeps answering.", no_args_is_help=True)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"inferrelay {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """inferrelay: one OpenAI-compatible endpoint in front of in-process engines and remote servers."""


@app.command()
def serve(
    config: Annotated[
        Optional[Path], typer.Option(help=f"Configuration directory (or {CONFIG_ENV}).")  # noqa: UP045
    ] = None,
    host: Annotated[str, typer.Option(help="Address to bind; 127.0.0.1 unless told otherwise.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
    insecure_no_auth: Annotated[
        bool, typer.Option("--insecure-no-auth", help="Serve a non-loopback address with no API key (anyone may call).")
    ] = False,
    workers: Annotated[int, typer.Option(min=1, help="Server processes on the one port (docs/scaling.md).")] = 1,
    fd: Annotated[Optional[int], typer.Option(hidden=True, help="A listening socket from --workers.")] = None,  # noqa: UP045
) -> None:
    """Serve the OpenAI-compatible API and the management API."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import uvicorn

    from inferrelay.access.keys import KeyStore
    from inferrelay.server.app import create_app
    from inferrelay.server.slow_clients import uvicorn_options

    settings = load_config(config)
    if not is_loopback(host) and not insecure_no_auth and not KeyStore(settings.home).has_keys():
        typer.echo(
            f"error: refusing to serve {host} with no API key: anyone who reaches the port could use every model, "
            "register files and spend providers' quotas.\n"
            "  make a key first:   inferrelay keys create NAME --admin\n"
            "  or accept the risk: inferrelay serve --host HOST --insecure-no-auth",
            err=True,
        )
        raise typer.Exit(2)
    if workers > 1:
        from inferrelay.server.workers import run_workers

        passed = ["--host", host, "--log-level", log_level, *(["--config", str(config)] if config else [])]
        passed += ["--insecure-no-auth"] if insecure_no_auth else []
        raise typer.Exit(run_workers(workers, host, port, passed))
    options = uvicorn_options(settings.runtime.connections)
    drain = settings.runtime.drain_timeout
    options["timeout_graceful_shutdown"] = drain if drain > 0 else None  # then running requests are cut
    if fd is not None:  # a child of --workers
        from inferrelay.server.workers import serve_socket

        serve_socket(create_app(settings), fd, {"log_level": log_level, **options})
    else:
        uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level, **options)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


config_app = typer.Typer(help="Check configuration directories.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(models_app, name="models")
app.add_typer(batch_app, name="batch")
app.add_typer(keys_app, name="keys")
app.command("tune")(tune_command)


ConfigDir = Annotated[
    Optional[Path],  # noqa: UP045 - typer reads the annotation
    typer.Argument(help=f"The configuration directory (default: ${CONFIG_ENV}).", show_default=False),
]


def _named_dir(directory: Path | None) -> Path:
    """DIR, else INFERRELAY_CONFIG: these commands check a directory, never the embedded default."""
    named = config_dir(directory)
    if named is None:
        typer.echo(f"error: name a configuration directory, or set {CONFIG_ENV}", err=True)
        raise typer.Exit(BAD_CONFIG)
    return named


@config_app.command("validate")
def config_validate(directory: ConfigDir = None) -> None:
    """Check providers.yaml and model-mappings.yaml, each file alone and against each other; exit 2 if broken."""
    named = _named_dir(directory)
    settings = load_config(directory, summary=True)
    routes = settings.routes
    typer.echo(
        f"{named}: valid: {len(settings.providers)} providers, {len(settings.models)} local models, "
        f"{len(routes.exact_matches)} exact matches, {len(routes.patterns)} patterns, "
        f"{len(routes.fallback_chains)} fallback chains, {len(routes.load_balancing)} load-balancing groups"
    )


@config_app.command("export-litellm")
def config_export_litellm(
    directory: ConfigDir = None,
    output: Annotated[
        Optional[Path], typer.Option("--output", "-o", help="Write here instead of standard output.")  # noqa: UP045
    ] = None,
    inferrelay_url: Annotated[
        str, typer.Option(help="Where LiteLLM reaches inferrelay for the local models.")
    ] = "http://127.0.0.1:8000",
) -> None:
    """Write a LiteLLM proxy config.yaml that routes like DIR (model_list, fallbacks, router_settings)."""
    import yaml

    from inferrelay.config.litellm_export import export_litellm

    named = _named_dir(directory)
    settings = load_config(directory)
    exported = export_litellm(settings, inferrelay_url)
    header = "".join(f"# not exported: {note}\n" for note in exported.notes)
    text = f"# LiteLLM proxy config generated by inferrelay from {named}\n{header}"
    text += yaml.safe_dump(exported.as_dict(settings), sort_keys=False)
    if output:
        output.write_text(text)
    else:
        typer.echo(text, nl=False)


@app.command()
def engines(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Each engine, whether it can run here, and why not."""
    from inferrelay.engines.registry import EngineRegistry

    registry = EngineRegistry.discover()  # discovery probes each engine once
    rows = registry.snapshot()
    tunings = _tunings_by_engine()
    for row in rows:
        state = registry.state(row["name"])
        engine = state.engine if state is not None and row["available"] else None
        row["build"] = engine.build() if engine is not None else None  # e.g. llama.cpp's CPU instructions
        row["tuned"] = tunings.get(row["name"], [])
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        status = "available" if row["available"] else f"unavailable: {row['error']}"
        typer.echo(f"{row['name']:<10} {','.join(row['capabilities']):<30} {status}")
        if row["build"]:
            typer.echo(f"{'':<10} build: {row['build']}")
        for t in row["tuned"]:
            figure = f"{t['value']:.1f} {t['metric']}" if t["value"] is not None else "failed"
            stale = " (stale: measured on another machine or library version)" if t["stale"] else ""
            typer.echo(f"{'':<10} tuned: {t['model']} {t['precision']}: {figure}{stale}")


def _tunings_by_engine() -> dict[str, list[dict[str, object]]]:
    """What `inferrelay tune` measured here, engine by engine (the precision each serves in)."""
    from inferrelay.config.schema import default_home
    from inferrelay.tune.book import TuningBook

    by_engine: dict[str, list[dict[str, object]]] = {}
    for tuning in TuningBook(default_home()).all():
        if tuning.serves:
            by_engine.setdefault(tuning.engine, []).append(tuning.view())
    return by_engine


@app.command()
def doctor(
    path: Annotated[Path, typer.Argument(help="A model file (GGUF, ONNX) or folder (transformers, diffusers...).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    config: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(help=f"Configuration directory, for alternatives (or {CONFIG_ENV})."),
    ] = None,
) -> None:
    """What a model is, what is broken and how to fix it, where it fits, and what to use instead; exit 1 if unusable."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from inferrelay.doctor.render import render
    from inferrelay.doctor.report import diagnose
    from inferrelay.engines.registry import EngineRegistry
    from inferrelay.runtime.catalog import ModelCatalog
    from inferrelay.runtime.registry import ModelRegistry

    settings = load_config(config)
    registry = ModelRegistry(settings.home)
    try:
        catalog = ModelCatalog(settings.models, registry)
        candidates = [spec for name in catalog.names() if (spec := catalog.get(name)) is not None]
    finally:
        registry.close()
    report = diagnose(path.expanduser(), EngineRegistry.discover(), candidates)
    report.tuned = _tuned_for_path(path.expanduser(), candidates, catalog)
    typer.echo(json.dumps(report.as_dict(), indent=2, default=str) if as_json else render(report))
    if not report.usable:
        raise typer.Exit(1)


def _tuned_for_path(path: Path, candidates: list[Any], catalog: Any) -> list[dict[str, Any]]:
    """The tunings of the models whose source is `path`."""
    from inferrelay.config.sources import resolve_source

    target, found = path.resolve(), []
    for spec in candidates:
        try:
            served_from = resolve_source(spec.source).path.resolve()
        except Exception:  # a model whose source does not resolve here is not served from this path
            continue
        if served_from == target and catalog.tunings is not None:
            found += [t.view() for t in catalog.tunings.of(spec.name)]
    return found


@app.command()
def logs(
    model: Annotated[Optional[str], typer.Option(help="Only this model (as asked).")] = None,  # noqa: UP045
    since: Annotated[Optional[str], typer.Option(help="Only the last 30s, 15m, 2h, 1d...")] = None,  # noqa: UP045
    failed: Annotated[bool, typer.Option("--failed", help="Only requests that failed.")] = False,
    limit: Annotated[int, typer.Option(min=1)] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The request log ($INFERRELAY_HOME/requests.sqlite3), newest first."""
    from inferrelay.config.schema import default_home
    from inferrelay.config.units import parse_duration
    from inferrelay.observe.queries import open_log, recent

    try:
        since_s = parse_duration(since) if since else None
    except ValueError as exc:
        typer.echo(f"error: --since: {exc}", err=True)
        raise typer.Exit(2) from None
    db = open_log(default_home())
    if db is None:
        typer.echo(f"no request log in {default_home()} yet", err=True)
        raise typer.Exit(1)
    rows = recent(db, model, since_s, failed, limit)
    db.close()
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    typer.echo("TIME                 MODEL                     BACKEND          STATUS OUTCOME          MS      TOKENS")
    for row in rows:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["at"]))
        tokens = f"{row['prompt_tokens']}+{row['completion_tokens']}"
        line = f"{when}  {row['model']:<25} {row['backend'] or '-':<16} {row['status']:<6} {row['outcome']:<16} "
        typer.echo(line + f"{row['latency_ms']:<7.0f} {tokens}")
        for backend, kind in row["attempts"]:
            typer.echo(f"{'':<21}  tried {backend}: {kind}")


if __name__ == "__main__":
    app()
