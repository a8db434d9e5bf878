"""`inferrelay batch embed INPUT -o OUTDIR --model NAME` and `inferrelay batch status OUTDIR`."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated, Optional

import typer

batch_app = typer.Typer(help="Batch jobs that survive crashes and resume where they stopped.", no_args_is_help=True)


@batch_app.command("embed")
def embed(
    input: Annotated[Path, typer.Argument(help="JSONL, CSV or Parquet with a text column.", exists=True)],
    output: Annotated[Path, typer.Option("-o", "--output", help="The output folder (a Parquet dataset).")],
    model: Annotated[str, typer.Option(help="An embedding model served here.")] = "all-minilm-l6-v2",
    text_column: Annotated[str, typer.Option()] = "text",
    id_column: Annotated[str, typer.Option(help="Absent from the input: ids are row numbers.")] = "id",
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    shard_size: Annotated[int, typer.Option(min=1, help="Rows per shard.")] = 10_000,
    checkpoint_every: Annotated[int, typer.Option(min=1, help="Batches per checkpoint.")] = 8,
    max_retries: Annotated[int, typer.Option(min=0, help="Retries of a failing shard.")] = 2,
    restart: Annotated[bool, typer.Option(help="Start over even if OUTDIR holds another job.")] = False,
    config: Annotated[Optional[Path], typer.Option(help="Configuration directory.")] = None,  # noqa: UP045
) -> None:
    """Embed every row; run the same command again to resume after a crash or Ctrl-C."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from inferrelay.batch.manifest import JobChanged
    from inferrelay.batch.model import as_encoder, load_model
    from inferrelay.batch.runner import EmbedJob, Stop, run_embed
    from inferrelay.config.loading import ConfigError, load_settings
    from inferrelay.config.schema import default_home
    from inferrelay.errors import InferrelayError

    job = EmbedJob(input, output, model, text_column, id_column, batch_size, shard_size, checkpoint_every, max_retries)
    stop = Stop()
    stop.install()
    try:
        settings = load_settings(config, default_home())
        encoder = as_encoder(load_model(model, settings), model)
        summary = run_embed(job, encoder, restart=restart, stop=stop)
    except ConfigError as exc:
        typer.echo("\n".join(f"config error: {p}" for p in exc.problems), err=True)
        raise typer.Exit(2) from None
    except JobChanged as exc:
        typer.echo(f"error: {output} holds a different job: {exc}. Use --restart to start over.", err=True)
        raise typer.Exit(2) from None
    except (InferrelayError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    rate = summary.rows_computed / summary.seconds if summary.seconds else 0.0
    typer.echo(
        f"{summary.rows} rows; {summary.rows_computed} computed in {summary.seconds:.1f} s ({rate:.0f} rows/s); "
        f"{summary.checkpoints_dropped} damaged checkpoints recomputed"
    )
    if summary.stopped:
        typer.echo("stopped: run the same command again to resume", err=True)
        raise typer.Exit(130)
    if summary.failed:
        typer.echo("failed shards:\n" + "\n".join(f"  {line}" for line in summary.failed), err=True)
        raise typer.Exit(1)


@batch_app.command("status")
def status(outdir: Annotated[Path, typer.Argument(help="A batch job's output folder.")]) -> None:
    """Each shard's state, rows done, attempts and last error."""
    from inferrelay.batch.manifest import Manifest

    manifest = Manifest.load(outdir)
    if manifest is None:
        typer.echo(f"error: {outdir} holds no batch job", err=True)
        raise typer.Exit(1)
    typer.echo(f"input {manifest.input_path} ({manifest.total_rows} rows), {manifest.parameters}")
    typer.echo("SHARD  ROWS          STATE     DONE     ATTEMPTS  LAST ERROR")
    for s in manifest.shards:
        rows = f"{s.start}-{s.stop}"
        line = f"{s.index:<6} {rows:<13} {s.state:<9} {s.rows_done:<8} {s.attempts:<9} {s.last_error or ''}"
        typer.echo(line.rstrip())
