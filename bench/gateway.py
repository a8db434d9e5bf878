"""The cost of the gateway itself: direct to a minimal upstream vs through inferrelay vs through LiteLLM.

One run starts the minimal upstream (bench/minimal_upstream.py), an inferrelay
server routing a model name to it, and a LiteLLM proxy doing the same
(installed from PyPI into bench/.venv-litellm on first use), then sends the
same chat request at concurrency 1 and 16 to each and reports requests per
second, median and p95 latency, and the ratios.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/gateway.py [--requests 600] [--skip-litellm] [--redis]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx

BENCH = Path(__file__).resolve().parent
LITELLM_VENV = BENCH / ".venv-litellm"
MASTER_KEY = "sk-" + secrets.token_hex(32)
BODY = {"model": "bench", "messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def process(
    command: list[str], ready_url: str, env: dict[str, str] | None = None, ready: Callable[[], bool] | None = None
) -> Iterator[None]:
    proc = subprocess.Popen(
        command, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 180
    try:
        while True:
            try:
                if ready() if ready is not None else httpx.get(ready_url, timeout=1).status_code < 500:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"{command[:3]} did not start: {proc.stderr.read().decode()[-2000:] if proc.stderr else ''}"
                )
            time.sleep(0.3)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


async def load(url: str, requests: int, concurrency: int) -> dict[str, float]:
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"authorization": f"Bearer {MASTER_KEY}"}  # LiteLLM wants a key; the others ignore it
    async with httpx.AsyncClient(limits=limits, timeout=30, headers=headers) as client:
        for _ in range(20):  # warm-up: connections, caches
            (await client.post(url, json=BODY)).raise_for_status()
        queue = iter(range(requests))

        async def worker() -> None:
            for _ in queue:
                started = time.perf_counter()
                response = await client.post(url, json=BODY)
                latencies.append(time.perf_counter() - started)
                response.raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    ordered = sorted(latencies)
    return {
        "rps": requests / wall,
        "median_ms": statistics.median(ordered) * 1000,
        "p95_ms": ordered[int(len(ordered) * 0.95) - 1] * 1000,
    }


def ensure_litellm() -> Path:
    litellm = LITELLM_VENV / "bin" / "litellm"
    if not litellm.exists():
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
        subprocess.run([str(LITELLM_VENV / "bin" / "pip"), "install", "-q", "litellm[proxy]"], check=True)
    return litellm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--skip-litellm", action="store_true")
    parser.add_argument(
        "--observability", action="store_true",
        help="also inferrelay without metrics and request log, and with OTLP tracing on (to the upstream as sink)",
    )  # fmt: skip
    parser.add_argument("--keys", action="store_true", help="also inferrelay with an API key required and sent")
    parser.add_argument(
        "--redis", action="store_true",
        help="also inferrelay with an rpm limit in process, the same in Redis (redis-server on PATH), and that "
        "with --workers 2",
    )  # fmt: skip
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="inferrelay-gateway-"))
    up, relay, lite = free_port(), free_port(), free_port()
    (work / "providers.yaml").write_text(
        f"providers:\n  up:\n    type: openai_compatible\n    base_url: http://127.0.0.1:{up}/v1\n"
        "    health_interval_s: 0\n    max_retries: 0\n"
    )
    (work / "model-mappings.yaml").write_text("exact_matches:\n  bench: {provider: up}\n")
    (work / "litellm.yaml").write_text(
        "model_list:\n  - model_name: bench\n    litellm_params:\n"
        f"      model: openai/bench\n      api_base: http://127.0.0.1:{up}/v1\n      api_key: unused\n"
        f"general_settings:\n  master_key: {MASTER_KEY}\n"
    )
    targets = {"direct": up, "inferrelay": relay}
    results: dict[str, dict[int, dict[str, float]]] = {}
    with process([sys.executable, str(BENCH / "minimal_upstream.py"), str(up)], f"http://127.0.0.1:{up}/health"):
        inferrelay = [sys.executable, "-m", "inferrelay.cli", "serve", "--config", str(work), "--port", str(relay)]
        with process([*inferrelay, "--log-level", "warning"], f"http://127.0.0.1:{relay}/health"):
            litellm_command = (
                [] if args.skip_litellm else [str(ensure_litellm()), "--config", str(work / "litellm.yaml")]
            )
            if litellm_command:
                targets["litellm"] = lite
                litellm_command += ["--port", str(lite), "--host", "127.0.0.1", "--num_workers", "1"]
            with (
                process(litellm_command, f"http://127.0.0.1:{lite}/health/liveliness")
                if litellm_command
                else _nothing(),
                ExitStack() as variants,
            ):
                if args.observability:
                    targets |= observability_variants(variants, work, up)
                if args.keys:
                    targets |= keys_variant(variants, work)
                if args.redis:
                    targets |= redis_variants(variants, work, args.keys)
                for name, port in targets.items():
                    url = f"http://127.0.0.1:{port}/v1/chat/completions"
                    results[name] = {c: asyncio.run(load(url, args.requests, c)) for c in (1, 16)}
    report(results)
    if args.keys:
        print(f"\nkey gate in process: {gate_cost_us():.2f} us per request (hash, lookup, state, rpm)")
    if args.redis:
        local_us, redis_us = asyncio.run(state_cost_us())
        print(f"\nstate per request (health, cooldown, rpm draw): in process {local_us:.1f} us, "
              f"in Redis {redis_us:.1f} us, added {redis_us - local_us:.1f} us")  # fmt: skip


def observability_variants(stack: ExitStack, work: Path, up: int) -> dict[str, int]:
    """inferrelay with metrics and the request log off, and with tracing on, each its own process."""
    bare = work / "bare"
    bare.mkdir()
    (bare / "providers.yaml").write_text((work / "providers.yaml").read_text())
    mappings = (work / "model-mappings.yaml").read_text()
    (bare / "model-mappings.yaml").write_text(mappings + "runtime:\n  metrics: false\n  request_log: false\n")
    ports = {"inferrelay-bare": free_port(), "inferrelay-tracing": free_port()}
    otlp = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{up}", "OTEL_SERVICE_NAME": "inferrelay-bench"}
    for name, folder, env in (("inferrelay-bare", bare, None), ("inferrelay-tracing", work, otlp)):
        port = ports[name]
        command = [sys.executable, "-m", "inferrelay.cli", "serve", "--config", str(folder), "--port", str(port)]
        stack.enter_context(process([*command, "--log-level", "warning"], f"http://127.0.0.1:{port}/health", env))
    return ports


def keys_variant(stack: ExitStack, work: Path) -> dict[str, int]:
    """inferrelay with one key in its home, the key every request here sends (MASTER_KEY), so each request is
    looked up, checked and counted: the cost of keys against the plain `inferrelay` of the same run."""
    port = free_port()
    command = [sys.executable, "-m", "inferrelay.cli", "serve", "--config", str(work), "--port", str(port)]
    env = {"INFERRELAY_HOME": str(keys_home(work / "keys-home"))}
    stack.enter_context(process([*command, "--log-level", "warning"], f"http://127.0.0.1:{port}/health", env))
    return {"inferrelay-keys": port}


def keys_home(home: Path) -> Path:
    """A home with the one key every request here sends (MASTER_KEY), limits checked each time, never reached."""
    from inferrelay.access.keys import KeyStore, digest

    store = KeyStore(home)
    store.create("bench", rpm=10**9)
    with sqlite3.connect(store.path) as db:
        db.execute("UPDATE keys SET hash = ? WHERE name = 'bench'", (digest(MASTER_KEY),))
    return home


def gate_cost_us(calls: int = 200_000) -> float:
    """Microseconds the key gate spends per request in process: the hash, the lookup, the limit."""
    from inferrelay.access.keys import KeyStore
    from inferrelay.access.quota import KeyQuota
    from inferrelay.server.auth import KeyGate

    home = Path(tempfile.mkdtemp(prefix="inferrelay-gate-"))
    store = KeyStore(home)
    _, secret = store.create("bench", rpm=10**9)
    gate = KeyGate(None, store, KeyQuota(dict), metrics_need_key=False)
    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions",
             "headers": [(b"authorization", f"Bearer {secret}".encode())]}  # fmt: skip
    started = time.perf_counter()
    for _ in range(calls):
        gate._admit(scope)
    return (time.perf_counter() - started) / calls * 1e6


def redis_variants(stack: ExitStack, work: Path, keys: bool) -> dict[str, int]:
    """The same provider with an rpm limit never reached, so every request draws from a bucket and reads the
    provider's health and cooldown: in process, in Redis, and in Redis from two worker processes; with `keys`,
    also the keys variant with its key's allowance in Redis (one more round trip to admit, one to count)."""
    port = free_port()
    redis = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    stack.enter_context(process(redis, "", ready=lambda: _redis_answers(port)))
    ports: dict[str, int] = {}
    shared = f"runtime:\n  state: redis://127.0.0.1:{port}/0\n"
    if keys:
        folder = work / "keys-redis"
        folder.mkdir()
        (folder / "providers.yaml").write_text((work / "providers.yaml").read_text())
        (folder / "model-mappings.yaml").write_text((work / "model-mappings.yaml").read_text() + shared)
        ports["inferrelay-keys-redis"] = free_port()
        command = [sys.executable, "-m", "inferrelay.cli", "serve", "--config", str(folder)]
        command += ["--port", str(ports["inferrelay-keys-redis"]), "--log-level", "warning"]
        env = {"INFERRELAY_HOME": str(keys_home(work / "keys-redis-home"))}
        stack.enter_context(process(command, f"http://127.0.0.1:{ports['inferrelay-keys-redis']}/health", env))
    for name, state, workers in (
        ("inferrelay-limits", "", "1"),
        ("inferrelay-redis", shared, "1"),
        ("inferrelay-redis-workers2", shared, "2"),
    ):
        folder = work / name
        folder.mkdir()
        providers = (work / "providers.yaml").read_text() + "    rate_limits: {rpm: 1000000000}\n"
        (folder / "providers.yaml").write_text(providers)
        (folder / "model-mappings.yaml").write_text((work / "model-mappings.yaml").read_text() + state)
        ports[name] = free_port()
        command = [sys.executable, "-m", "inferrelay.cli", "serve", "--config", str(folder), "--port", str(ports[name])]
        command += ["--workers", workers, "--log-level", "warning"]
        stack.enter_context(process(command, f"http://127.0.0.1:{ports[name]}/health"))
    return ports


async def state_cost_us(calls: int = 5000) -> tuple[float, float]:
    """Microseconds per request the router spends on its state: what it asks of it for one remote step."""
    from inferrelay.state.base import Draw
    from inferrelay.state.local import LocalState
    from inferrelay.state.redis_store import RedisState

    port = free_port()
    redis = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    figures = []
    with process(redis, "", ready=lambda: _redis_answers(port)):
        for state in (LocalState(), RedisState(f"redis://127.0.0.1:{port}/0")):
            figures.append(await _per_request_us(state, [Draw("bench:rpm", 10**9, 1)], calls))
            await state.aclose()
    return figures[0], figures[1]


async def _per_request_us(state: Any, draws: list[Any], calls: int) -> float:
    for _ in range(100):  # warm-up: the connection, the script loaded
        await state.admit("up", draws)
    started = time.perf_counter()
    for _ in range(calls):
        await state.admit("up", draws)  # what the router asks for each remote step it walks
    return (time.perf_counter() - started) / calls * 1e6


def _redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def versus(results: dict[str, dict[int, dict[str, float]]], name: str, base: str, concurrency: int) -> str:
    r, b = results[name][concurrency], results[base][concurrency]
    return (
        f"\n{name} vs {base} at concurrency {concurrency}: "
        f"throughput {r['rps'] / b['rps']:.3f}x, median {r['median_ms'] - b['median_ms']:+.3f} ms"
    )


def report(results: dict[str, dict[int, dict[str, float]]]) -> None:
    direct = results["direct"]
    rows = [
        "| target | concurrency | req/s | median ms | p95 ms | added median ms | req/s vs direct |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, by_concurrency in results.items():
        for concurrency, r in by_concurrency.items():
            added = r["median_ms"] - direct[concurrency]["median_ms"]
            ratio = r["rps"] / direct[concurrency]["rps"]
            figures = f"{r['rps']:.0f} | {r['median_ms']:.2f} | {r['p95_ms']:.2f} | {added:.2f} | {ratio:.2f}"
            rows.append(f"| {name} | {concurrency} | {figures} |")
    if "inferrelay-bare" in results:
        for concurrency in (1, 16):
            for name in ("inferrelay", "inferrelay-tracing"):
                rows.append(versus(results, name, "inferrelay-bare", concurrency))
    if "inferrelay-keys" in results:
        rows += [versus(results, "inferrelay-keys", "inferrelay", concurrency) for concurrency in (1, 16)]
    if "inferrelay-keys-redis" in results:
        rows += [versus(results, "inferrelay-keys-redis", "inferrelay-keys", concurrency) for concurrency in (1, 16)]
    if "inferrelay-redis" in results:
        for concurrency in (1, 16):
            local, shared = results["inferrelay-limits"][concurrency], results["inferrelay-redis"][concurrency]
            two = results["inferrelay-redis-workers2"][concurrency]
            rows.append(
                f"\ninferrelay-redis vs inferrelay-limits at concurrency {concurrency}: throughput "
                f"{shared['rps'] / local['rps']:.3f}x, median {shared['median_ms'] - local['median_ms']:+.3f} ms; "
                f"--workers 2 vs 1 (both Redis): throughput {two['rps'] / shared['rps']:.3f}x"
            )
    if "litellm" in results:
        for concurrency in (1, 16):
            ratio = results["inferrelay"][concurrency]["rps"] / results["litellm"][concurrency]["rps"]
            rows.append(f"\ninferrelay / LiteLLM throughput at concurrency {concurrency}: {ratio:.2f}x")
    print("\n".join(rows))
    out = BENCH / "results"
    out.mkdir(exist_ok=True)
    (out / "gateway.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
