"""`inferrelay tune MODEL`: measure each engine of a model on this machine; the chain is then ordered by it."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from inferrelay.cli_config import CONFIG_ENV, load_config


def tune_command(
    model: Annotated[str, typer.Argument(help="A model name (inferrelay models list).")],
    config: Annotated[
        Optional[Path], typer.Option(help=f"Configuration directory (or {CONFIG_ENV}).")  # noqa: UP045
    ] = None,
    seconds: Annotated[float, typer.Option(help="Measuring time per engine and precision.", min=0.5, max=120)] = 3.0,
    device: Annotated[str, typer.Option(help="cpu, or cuda.")] = "cpu",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Run a short standard workload on every engine of MODEL's chain that can run here (and each one's lower
    precision), record it with this machine's fingerprint, and order the chain by it: fastest first among the
    engines that keep the model's accuracy (a chain written in model-mappings.yaml keeps its order)."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from inferrelay.config.embedded import embedded_models
    from inferrelay.engines.registry import EngineRegistry
    from inferrelay.runtime.catalog import ModelCatalog
    from inferrelay.runtime.registry import ModelRegistry
    from inferrelay.tune.book import TuningBook
    from inferrelay.tune.book import as_json as tunings_json
    from inferrelay.tune.run import plan, tune

    settings = load_config(config)
    registry = ModelRegistry(settings.home)
    registry.seed(embedded_models())
    catalog = ModelCatalog(settings.models, registry)
    spec = catalog.get(model)
    if spec is None:
        typer.echo(f"error: no model named {model!r}; inferrelay models list shows them", err=True)
        raise typer.Exit(1)
    engines = EngineRegistry.discover()
    steps = plan(spec, engines)
    with typer.progressbar(length=len(steps), label=f"tuning {model}", file=sys.stderr) as bar:

        def step(what: str) -> None:
            bar.label = f"tuning {model}: {what}"
            bar.update(1)

        tunings = tune(spec, settings.home, engines, device, seconds, on_step=step)
    book = TuningBook(settings.home)
    book.record(tunings)
    ordered = catalog.get(model)
    if as_json:
        typer.echo(
            json.dumps(
                {"tunings": json.loads(tunings_json(tunings)), "chain": ordered.engines if ordered else []}, indent=2
            )
        )
        return
    for t in tunings:
        figure = f"{t.value:8.1f} {t.metric}" if t.value is not None else f"failed: {t.error}"
        extra = f", first token {t.first_token_ms:.0f} ms" if t.first_token_ms is not None else ""
        acc = f", accuracy {t.accuracy:.4f}" if t.accuracy is not None else ""
        mark = "" if t.keeps_accuracy else "  (not chosen: below the reference's accuracy or failed)"
        typer.echo(f"{t.engine:9} {t.precision:15} {figure}{extra}{acc}{mark}")
    chain = " -> ".join(ordered.engines) if ordered else "?"
    typer.echo(f"chain: {chain}" + (" (as written in model-mappings.yaml)" if catalog.pinned(model) else ""))
