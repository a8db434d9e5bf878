"""The command line: `inferrelay serve`, `inferrelay engines`, `inferrelay --version`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from inferrelay import __version__

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
        Optional[Path], typer.Option(help="Configuration directory (or INFERRELAY_CONFIG).")  # noqa: UP045
    ] = None,
    host: Annotated[str, typer.Option(help="Address to bind; 127.0.0.1 unless told otherwise.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Serve the OpenAI-compatible API and the management API."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import uvicorn

    from inferrelay.config.loading import ConfigError, load_settings
    from inferrelay.config.schema import default_home
    from inferrelay.server.app import create_app

    config_dir = config or (Path(os.environ["INFERRELAY_CONFIG"]) if os.environ.get("INFERRELAY_CONFIG") else None)
    try:
        settings = load_settings(config_dir, default_home())
    except ConfigError as exc:
        for problem in exc.problems:
            typer.echo(f"config error: {problem}", err=True)
        raise typer.Exit(1) from None
    uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level)


config_app = typer.Typer(help="Check configuration directories.", no_args_is_help=True)
app.add_typer(config_app, name="config")


@config_app.command("validate")
def config_validate(directory: Annotated[Path, typer.Argument(help="The configuration directory.")]) -> None:
    """Check providers.yaml and model-mappings.yaml, each file alone and against each other."""
    from inferrelay.config.loading import ConfigError, load_settings
    from inferrelay.config.schema import default_home

    try:
        settings = load_settings(directory, default_home())
    except ConfigError as exc:
        for problem in exc.problems:
            typer.echo(problem, err=True)
        typer.echo(f"{len(exc.problems)} problem(s) in {directory}", err=True)
        raise typer.Exit(1) from None
    routes = settings.routes
    typer.echo(
        f"{directory}: valid: {len(settings.providers)} providers, {len(settings.models)} local models, "
        f"{len(routes.exact_matches)} exact matches, {len(routes.patterns)} patterns, "
        f"{len(routes.fallback_chains)} fallback chains, {len(routes.load_balancing)} load-balancing groups"
    )


@app.command()
def engines(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Each engine, whether it can run here, and why not."""
    from inferrelay.engines.registry import EngineRegistry

    rows = EngineRegistry.discover().snapshot()  # discovery probes each engine once
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        status = "available" if row["available"] else f"unavailable: {row['error']}"
        typer.echo(f"{row['name']:<10} {','.join(row['capabilities']):<30} {status}")


if __name__ == "__main__":
    app()
