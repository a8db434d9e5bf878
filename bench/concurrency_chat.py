"""Chat at concurrency 1, 4, 8 and 16: inferrelay against llama_cpp.server on the same GGUF, in one run.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/concurrency_chat.py [--tokens 64] [--levels 1 4 8 16]

Both servers get the same streamed greedy chat requests (each caller its own
prompt, `max_tokens` tokens) from one async httpx client. Reported per
server and concurrency: aggregate completion tokens/s over the wall time,
and p50/p95 time to first token. inferrelay serves the embedded SmolLM2 GGUF
with its llamacpp engine (in a worker process, as by default); the peer is
llama-cpp-python's own server (`python -m llama_cpp.server`) on the same file
and context size, queueing concurrent requests (`--interrupt_requests False`:
its default cuts a stream short when the next request arrives). Nothing is
asserted; bench/concurrency.py writes the results with the embeddings half.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import chat_engine_alone  # a script beside this one
import httpx

from inferrelay.config.embedded import SMOLLM2
from inferrelay.config.sources import resolve_source

TOPICS = "dragon lighthouse river robot garden winter market violin desert harbour comet forest clock bridge owl ship"
CONTEXT = 2048


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def server(command: list[str], ready_url: str, log: Path, env: dict[str, str] | None = None) -> Iterator[None]:
    with log.open("w") as out:
        proc = subprocess.Popen(command, env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        try:
            while True:
                try:
                    if httpx.get(ready_url, timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{command[:4]} did not start: {log.read_text()[-2000:]}")
                time.sleep(0.3)
            yield
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def body(model: str, caller: int, tokens: int) -> dict[str, Any]:
    topic = TOPICS.split()[caller % len(TOPICS.split())]
    return {
        "model": model,
        "messages": [{"role": "user", "content": f"Write a long story about a {topic}, number {caller}."}],
        "max_tokens": tokens,
        "temperature": 0,
        "stream": True,
    }


async def one_stream(client: httpx.AsyncClient, url: str, payload: dict[str, Any]) -> tuple[float, int]:
    """Time to the first content and the number of content chunks (one token each on both servers)."""
    started = time.perf_counter()
    first = 0.0
    chunks = 0
    async with client.stream("POST", url, json=payload) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data:") or line.strip() == "data: [DONE]":
                continue
            event = json.loads(line[5:])
            choices = event.get("choices") or [{}]
            if choices[0].get("delta", {}).get("content"):
                chunks += 1
                first = first or time.perf_counter() - started
    return first, chunks


async def level(url: str, model: str, concurrency: int, tokens: int) -> dict[str, float]:
    requests = max(8, 2 * concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=600) as client:
        await one_stream(client, url, body(model, 999, 8))  # warm-up
        queue = iter(range(requests))
        firsts: list[float] = []
        produced = 0

        async def caller() -> None:
            nonlocal produced
            for index in queue:
                first, chunks = await one_stream(client, url, body(model, index, tokens))
                firsts.append(first)
                produced += chunks

        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    ordered = sorted(firsts)
    return {
        "requests": requests,
        "tokens_per_s": round(produced / wall, 2),
        "ttft_p50_ms": round(statistics.median(ordered) * 1000, 1),
        "ttft_p95_ms": round(ordered[max(0, int(len(ordered) * 0.95) - 1)] * 1000, 1),
    }


def run(levels: list[int], tokens: int) -> dict[str, Any]:
    gguf = resolve_source(SMOLLM2.source).path
    work = Path(tempfile.mkdtemp(prefix="inferrelay-concurrency-"))
    ours, peer = free_port(), free_port()
    results: dict[str, Any] = {"model": SMOLLM2.name, "gguf": str(gguf), "max_tokens": tokens, "servers": {}}
    inferrelay = [sys.executable, "-m", "inferrelay.cli", "serve", "--port", str(ours), "--log-level", "warning"]
    peer_command = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", "smollm2"]
    peer_command += ["--host", "127.0.0.1", "--port", str(peer), "--n_ctx", str(CONTEXT), "--verbose", "False"]
    peer_command += ["--interrupt_requests", "False"]  # else each new request cuts the stream before it
    home = {"INFERRELAY_HOME": str(work / "home"), "HF_HUB_OFFLINE": "1"}
    targets = [
        ("inferrelay", inferrelay, ours, SMOLLM2.name, home),
        ("llama_cpp.server", peer_command, peer, "smollm2", None),
    ]
    for name, command, port, model, env in targets:  # one server at a time: they share two cores
        url = f"http://127.0.0.1:{port}"
        with server(command, f"{url}/v1/models", work / f"{name}.log", env):
            figures = {c: asyncio.run(level(f"{url}/v1/chat/completions", model, c, tokens)) for c in levels}
        results["servers"][name] = figures
        for c, f in figures.items():
            print(f"{name:18} c={c:<3} {f['tokens_per_s']:8.1f} tok/s  ttft p50 {f['ttft_p50_ms']:7.1f} ms  "
                  f"p95 {f['ttft_p95_ms']:7.1f} ms", flush=True)  # fmt: skip
    ours_by, peer_by = results["servers"]["inferrelay"], results["servers"]["llama_cpp.server"]
    results["ratios"] = {
        str(c): {
            "vs_peer": round(ours_by[c]["tokens_per_s"] / peer_by[c]["tokens_per_s"], 2),
            "vs_own_concurrency_1": round(ours_by[c]["tokens_per_s"] / ours_by[levels[0]]["tokens_per_s"], 2),
        }
        for c in levels
    }
    results["engine_alone"] = chat_engine_alone.run(tokens)  # the ceiling: no server, no HTTP
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 4, 8, 16])
    args = parser.parse_args()
    print(json.dumps(run(args.levels, args.tokens)["ratios"], indent=2))


if __name__ == "__main__":
    main()
