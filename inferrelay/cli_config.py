"""The configuration directory of every command: --config, else INFERRELAY_CONFIG; a broken one exits 2, saying
each problem's file, line and key path, never with a traceback."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import typer

if TYPE_CHECKING:
    from inferrelay.config.loading import ConfigError
    from inferrelay.config.schema import Settings

CONFIG_ENV = "INFERRELAY_CONFIG"
BAD_CONFIG = 2
"""The exit status of every command given a configuration it cannot use."""


def config_dir(option: Path | None) -> Path | None:
    """--config when given, else INFERRELAY_CONFIG when set; None means the embedded default."""
    if option is not None:
        return option
    value = os.environ.get(CONFIG_ENV, "").strip()
    return Path(value) if value else None


def load_config(option: Path | None, home: Path | None = None, *, summary: bool = False) -> Settings:
    """The settings of `config_dir(option)`, or exit 2 with every problem (and their count, with `summary`)."""
    from inferrelay.config.loading import ConfigError, load_settings
    from inferrelay.config.schema import default_home

    directory = config_dir(option)
    try:
        return load_settings(directory, home or default_home())
    except ConfigError as exc:
        config_failed(exc, directory, from_env=option is None, summary=summary)


def config_failed(exc: ConfigError, directory: Path | None, *, from_env: bool, summary: bool = False) -> NoReturn:
    for problem in exc.problems:
        typer.echo(f"config error: {problem}", err=True)
    if summary:
        typer.echo(f"{len(exc.problems)} problem(s) in {directory}", err=True)
    if from_env and directory is not None:
        typer.echo(f"(the configuration directory {directory} comes from {CONFIG_ENV})", err=True)
    raise typer.Exit(BAD_CONFIG)
