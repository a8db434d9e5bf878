"""Two server processes with one copy of each local model (`serve --workers 2`, the model host) against two servers
with a copy each (two `inferrelay serve`, as `--workers 2` was before the host), in one run on one machine.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/shared_models.py [--requests 256]

For each layout: both embedded models are loaded in both servers (requests until each server holds each), then the
memory of the whole process tree (resident and proportional set size, PSS counting a shared page once), then
MiniLM embeddings (8 callers, 8 sentences each) and SmolLM2 chat (4 callers, 32 greedy tokens) spread across both
servers: requests/s. The layouts alternate twice. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

RESULTS = Path(__file__).parent / "results" / "shared_models.json"
REPO = Path(__file__).resolve().parent.parent
CHAT, EMBED = "smollm2-135m-instruct", "all-minilm-l6-v2"
SENTENCES = [f"sentence number {i} about a shared copy of the weights" for i in range(8)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(home: Path, *args: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "INFERRELAY_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "inferrelay.cli", "serve", "--port", str(port), "--log-level", "warning", *args]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError("server did not start")


def call(url: str, model: str) -> None:
    if model == EMBED:
        response = httpx.post(f"{url}/v1/embeddings", json={"model": EMBED, "input": SENTENCES}, timeout=120)
    else:
        body = {"model": CHAT, "messages": [{"role": "user", "content": "Tell me about rivers."}],
                "max_tokens": 32, "temperature": 0}  # fmt: skip
        response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120)
    response.raise_for_status()


def tree(pid: int) -> list[int]:
    found = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            found += tree(int(child))
    return found


def memory(pids: list[int]) -> dict[str, int]:
    rss = pss = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            name, _, value = line.partition(":")
            if name == "Rss":
                rss += int(value.split()[0]) * 1024
            elif name == "Pss":
                pss += int(value.split()[0]) * 1024
    return {"rss_bytes": rss, "pss_bytes": pss}


def workers(pids: list[int]) -> int:
    return sum(1 for p in pids if b"worker_main" in Path(f"/proc/{p}/cmdline").read_bytes())


def throughput(urls: list[str], model: str, count: int, callers: int) -> float:
    started = time.perf_counter()
    with ThreadPoolExecutor(callers) as pool:
        list(pool.map(lambda i: call(urls[i % len(urls)], model), range(count)))
    return count / (time.perf_counter() - started)


def layout(name: str, home: Path, requests: int) -> dict[str, Any]:
    if name == "shared":
        processes = [start(home, "--workers", "2")]
        urls = [processes[0][1]]
    else:
        processes = [start(home / f"server-{i}") for i in range(2)]
        urls = [url for _, url in processes]
    try:
        for model in (EMBED, CHAT):  # until every server holds both: fresh connections spread across --workers
            throughput(urls, model, 32, 8)
        pids = [p for process, _ in processes for p in tree(process.pid)]
        figures: dict[str, Any] = {"processes": len(pids), "workers": workers(pids), **memory(pids)}
        figures["embeddings_per_s"] = round(throughput(urls, EMBED, requests, 8), 1)
        figures["chat_per_s"] = round(throughput(urls, CHAT, requests // 8, 4), 2)
        return figures
    finally:
        for process, _ in processes:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=256)
    options = parser.parse_args()
    runs: dict[str, list[dict[str, Any]]] = {"shared": [], "separate": []}
    with tempfile.TemporaryDirectory() as folder:
        cache = REPO / ".cache" / "test-home" / "cache"  # the ONNX exports, built once
        for round_ in range(2):
            for name in ("shared", "separate") if round_ == 0 else ("separate", "shared"):
                home = Path(folder) / f"{name}-{round_}"
                for sub in [home] if name == "shared" else [home / "server-0", home / "server-1"]:
                    sub.mkdir(parents=True)
                    if cache.exists():
                        (sub / "cache").symlink_to(cache)
                runs[name].append(layout(name, home, options.requests))
                print(name, runs[name][-1], flush=True)
    best = {
        name: {k: (min if "bytes" in k else max)(r[k] for r in rounds) for k in rounds[0]}
        for name, rounds in runs.items()
    }
    ratios = {
        k: round(best["shared"][k] / best["separate"][k], 3)
        for k in ("rss_bytes", "pss_bytes", "embeddings_per_s", "chat_per_s")
    }
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "command": "HF_HUB_OFFLINE=1 .venv/bin/python bench/shared_models.py",
        "runs": runs,
        "best": best,
        "shared_over_separate": ratios,
    }
    print(json.dumps({"best": best, "shared_over_separate": ratios}, indent=2))
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
