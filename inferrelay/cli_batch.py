"""`inferrelay batch embed|generate INPUT -o OUTDIR --model NAME` and `inferrelay batch status OUTDIR`."""

from __future__ import annotations

import logging
import os
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

if TYPE_CHECKING:
    from inferrelay.batch.job import BatchJob
    from inferrelay.batch.pools import Pool
    from inferrelay.batch.progress import Progress
    from inferrelay.batch.summary import Summary
    from inferrelay.observe.metrics import Metrics

batch_app = typer.Typer(help="Batch jobs that survive crashes and resume where they stopped.", no_args_is_help=True)


class Backend(str, Enum):
    local = "local"
    ray = "ray"


Input = Annotated[Path, typer.Argument(help="JSONL, CSV or Parquet.", exists=True, dir_okay=False)]
Output = Annotated[Path, typer.Option("-o", "--output", help="The output folder (a Parquet dataset).")]
IdColumn = Annotated[str, typer.Option(help="Absent from the input: ids are row numbers.")]
ShardSize = Annotated[int, typer.Option(min=1, help="Rows per shard.")]
CheckpointEvery = Annotated[int, typer.Option(min=1, help="Batches per checkpoint.")]
MaxRetries = Annotated[int, typer.Option(min=0, help="Retries of a failing shard.")]
Workers = Annotated[
    Optional[int],  # noqa: UP045 - typer reads the annotation
    typer.Option(min=1, help="Worker processes (default: one per GPU; none, in this process, without GPUs)."),
]
BackendOption = Annotated[
    Backend, typer.Option(help="local processes, or Ray tasks on RAY_ADDRESS (a local Ray when unset).")
]
Engine = Annotated[Optional[str], typer.Option(help="Load with this engine of the model's chain only.")]  # noqa: UP045
Dtype = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option(help="Instead of the model's: float32, float16, bfloat16, or int8 (onnx: 1.9x faster embeddings)."),
]
Restart = Annotated[bool, typer.Option(help="Start over even if OUTDIR holds another job.")]
Config = Annotated[Optional[Path], typer.Option(help="Configuration directory (or INFERRELAY_CONFIG).")]  # noqa: UP045
ProgressOption = Annotated[bool, typer.Option(help="A progress bar on a terminal, log lines otherwise.")]
MetricsPort = Annotated[
    Optional[int],  # noqa: UP045
    typer.Option(min=1, max=65535, help="Serve Prometheus metrics on 127.0.0.1:PORT/metrics while the job runs."),
]


@batch_app.command("embed")
def embed(
    input: Input,
    output: Output,
    model: Annotated[str, typer.Option(help="An embedding model served here.")] = "all-minilm-l6-v2",
    text_column: Annotated[str, typer.Option()] = "text",
    id_column: IdColumn = "id",
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    shard_size: ShardSize = 10_000,
    checkpoint_every: CheckpointEvery = 8,
    max_retries: MaxRetries = 2,
    workers: Workers = None,
    backend: BackendOption = Backend.local,
    engine: Engine = None,
    dtype: Dtype = None,
    compile: Annotated[
        Optional[bool],  # noqa: UP045
        typer.Option(
            "--compile/--no-compile",
            help="torch.compile a torch encoder (1.15x eager here, after a 5-25 s compile); default: 50,000 rows left.",
        ),
    ] = None,
    restart: Restart = False,
    config: Config = None,
    progress: ProgressOption = True,
    metrics_port: MetricsPort = None,
) -> None:
    """Embed every row; run the same command again to resume after a crash or Ctrl-C."""
    from inferrelay.batch.job import BatchJob

    job = BatchJob(
        task="embed", input=input, outdir=output, model=model, home=_home(), config=_checked_config(config),
        text_column=text_column, id_column=id_column, engine=engine, dtype=dtype, batch_size=batch_size,
        shard_size=shard_size, checkpoint_every=checkpoint_every, max_retries=max_retries, compile=compile,
    )  # fmt: skip
    _run(job, workers, backend, restart, progress, metrics_port)


@batch_app.command("generate")
def generate(
    input: Input,
    output: Output,
    model: Annotated[str, typer.Option(help="A text generation model served here.")] = "smollm2-135m-instruct",
    text_column: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="A prompt (one user turn) or messages column; default: prompt, else messages."),
    ] = None,
    id_column: IdColumn = "id",
    batch_size: Annotated[int, typer.Option(min=1, help="Rows a worker takes at a time.")] = 8,
    shard_size: ShardSize = 1_000,
    checkpoint_every: CheckpointEvery = 1,
    max_retries: MaxRetries = 2,
    workers: Workers = None,
    backend: BackendOption = Backend.local,
    engine: Engine = None,
    dtype: Dtype = None,
    max_tokens: Annotated[int, typer.Option(min=1)] = 128,
    temperature: Annotated[float, typer.Option(min=0.0, help="0: greedy, so a resume repeats the first run.")] = 0.0,
    top_p: Annotated[float, typer.Option(min=0.0, max=1.0)] = 1.0,
    seed: Annotated[int, typer.Option()] = 0,
    restart: Restart = False,
    config: Config = None,
    progress: ProgressOption = True,
    metrics_port: MetricsPort = None,
) -> None:
    """Generate an answer for every row: its text and token counts. Run it again to resume."""
    from inferrelay.batch.inputs import pick_text_column
    from inferrelay.batch.job import BatchJob, Generation

    try:
        column = text_column or pick_text_column(input, ("prompt", "messages"))
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    job = BatchJob(
        task="generate", input=input, outdir=output, model=model, home=_home(), config=_checked_config(config),
        text_column=column, id_column=id_column, engine=engine, dtype=dtype, batch_size=batch_size,
        shard_size=shard_size, checkpoint_every=checkpoint_every, max_retries=max_retries,
        generation=Generation(max_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed),
    )  # fmt: skip
    _run(job, workers, backend, restart, progress, metrics_port)


def _home() -> Path:
    from inferrelay.config.schema import default_home

    return default_home()


def _checked_config(config: Path | None) -> Path | None:
    """--config or INFERRELAY_CONFIG, checked before any worker starts (a broken one exits 2); the workers read
    the same directory."""
    from inferrelay.cli_config import config_dir, load_config

    load_config(config, _home())
    return config_dir(config)


def _run(
    job: BatchJob, workers: int | None, backend: Backend, restart: bool, progress: bool, metrics_port: int | None
) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from inferrelay.batch.coordinator import Stop, run_job
    from inferrelay.batch.manifest import JobChanged
    from inferrelay.batch.pools import WorkerLoadFailed
    from inferrelay.batch.progress import Progress
    from inferrelay.cli_config import config_failed
    from inferrelay.config.loading import ConfigError
    from inferrelay.errors import InferrelayError

    stop = Stop()
    stop.install()
    shown = Progress(enabled=progress)
    metrics = _serve_metrics(metrics_port, shown) if metrics_port else None
    try:
        summary = run_job(job, lambda resolved: _pool(resolved, workers, backend), restart, stop, shown, metrics)
    except ConfigError as exc:  # a worker's own reading of it
        config_failed(exc, job.config, from_env=False)
    except JobChanged as exc:
        typer.echo(f"error: {job.outdir} holds a different job: {exc}. Use --restart to start over.", err=True)
        raise typer.Exit(2) from None
    except WorkerLoadFailed as exc:
        typer.echo(f"error: the model could not be loaded: {exc}", err=True)
        raise typer.Exit(2) from None
    except (InferrelayError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    _report(summary)


def _serve_metrics(port: int, progress: Progress) -> Metrics:
    """The job's counters, and its progress as gauges, on 127.0.0.1:PORT/metrics until the command exits."""
    from prometheus_client import start_http_server

    from inferrelay.batch.progress import ProgressCollector
    from inferrelay.observe.metrics import Metrics

    metrics = Metrics()
    metrics.registry.register(ProgressCollector(progress))
    try:
        start_http_server(port, addr="127.0.0.1", registry=metrics.registry)
    except OSError as exc:
        typer.echo(f"error: --metrics-port {port}: {exc}", err=True)
        raise typer.Exit(2) from None
    return metrics


def _pool(job: BatchJob, workers: int | None, backend: Backend) -> Pool:
    if backend is Backend.ray:
        from inferrelay.batch.ray_pool import RayPool

        return RayPool(job, workers)
    from inferrelay.batch.pools import InlinePool, ProcessPool
    from inferrelay.engines.devices import visible_gpus

    devices = visible_gpus()
    if workers is None and not devices:
        return InlinePool(job)
    return ProcessPool(job, workers or len(devices), devices)


def _report(summary: Summary) -> None:
    rate = summary.rows_computed / summary.seconds if summary.seconds else 0.0
    typer.echo(
        f"{summary.rows} rows; {summary.rows_computed} computed in {summary.seconds:.1f} s ({rate:.0f} rows/s); "
        f"{summary.checkpoints_dropped} damaged checkpoints recomputed; {summary.retries} retries; "
        f"{summary.workers_died} workers died; {len(summary.failed)} shards failed"
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

    try:
        manifest = Manifest.load(outdir)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    if manifest is None:
        typer.echo(f"error: {outdir} holds no batch job", err=True)
        raise typer.Exit(1)
    done = sum(s.rows_done for s in manifest.shards)
    typer.echo(f"input {manifest.input_path} ({manifest.total_rows} rows, {done} done), {manifest.parameters}")
    typer.echo("SHARD  ROWS          STATE     DONE     ATTEMPTS  LAST ERROR")
    for s in manifest.shards:
        rows = f"{s.start}-{s.stop}"
        line = f"{s.index:<6} {rows:<13} {s.state:<9} {s.rows_done:<8} {s.attempts:<9} {s.last_error or ''}"
        typer.echo(line.rstrip())
