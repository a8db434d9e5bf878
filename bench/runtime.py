"""The runtime's costs: load and unload time, memory estimated against measured, cold start to first token.

One run starts a server with a fresh INFERRELAY_HOME (the ONNX export cache
of the test home is reused, so export time is not counted), registers each
embedded model once per engine, loads and unloads each through the API, and
times a cold server to its first streamed token.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/runtime.py
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))

from inferrelay.config.embedded import MINILM, SMOLLM2  # noqa: E402

CASES = [(SMOLLM2, "llamacpp"), (SMOLLM2, "onnx"), (SMOLLM2, "torch"), (MINILM, "onnx"), (MINILM, "torch")]
MIB = 2**20


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(home: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "INFERRELAY_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "inferrelay.cli", "serve", "--port", str(port), "--log-level", "warning"]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_ready(url: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not start")


def fresh_home() -> Path:
    home = Path(tempfile.mkdtemp(prefix="inferrelay-runtime-"))
    cache = REPO / ".cache" / "test-home" / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    (home / "cache").symlink_to(cache)
    return home


def cold_start_to_first_token() -> float:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    server = start(fresh_home(), port)
    try:
        wait_ready(url)
        body = {"model": SMOLLM2.name, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "stream": True}
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=300) as response:
            for line in response.iter_lines():
                if '"content"' in line:
                    return time.perf_counter() - started
        raise RuntimeError("no token arrived")
    finally:
        server.terminate()
        server.wait()


def loads_and_unloads() -> list[dict[str, object]]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start(fresh_home(), port)
    rows = []
    try:
        wait_ready(url)
        for spec, engine in CASES:
            name = f"{spec.name}-{engine}"
            body = {"name": name, "source": spec.source, "engines": [engine], "context_length": spec.context_length}
            httpx.post(f"{url}/api/v1/runtime/models/register", json=body, timeout=60).raise_for_status()
            httpx.post(f"{url}/api/v1/runtime/models/load", json={"name": name}, timeout=600).raise_for_status()
            httpx.post(f"{url}/api/v1/runtime/models/unload", json={"name": name}, timeout=600).raise_for_status()
            started = time.perf_counter()
            loaded = httpx.post(f"{url}/api/v1/runtime/models/load", json={"name": name}, timeout=600)
            load_wall = time.perf_counter() - started
            loaded.raise_for_status()
            started = time.perf_counter()
            unloaded = httpx.post(f"{url}/api/v1/runtime/models/unload", json={"name": name}, timeout=600).json()
            unload_wall = time.perf_counter() - started
            memory = loaded.json()["memory"]
            estimated, measured = memory["estimated"]["total"], memory["measured_bytes"]
            rows.append(
                {
                    "model": spec.name,
                    "engine": engine,
                    "load_s": round(load_wall, 3),
                    "unload_s": round(unload_wall, 3),
                    "estimated_mib": round(estimated / MIB, 1),
                    "measured_mib": round(measured / MIB, 1),
                    "measured_over_estimated": round(measured / estimated, 2) if estimated else None,
                    "freed_mib": round(unloaded["freed_bytes"] / MIB, 1),
                }
            )
    finally:
        server.terminate()
        server.wait()
    return rows


def main() -> None:
    rows = loads_and_unloads()
    cold = cold_start_to_first_token()
    header = "| model | engine | load s | unload s | estimated MiB | measured MiB | measured / estimated | freed MiB |"
    lines = [header, "|---|---|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(str(value) for value in row.values()) + " |" for row in rows]
    lines.append(f"\ncold server to first streamed token ({SMOLLM2.name}): {cold:.2f} s")
    print("\n".join(lines))
    out = BENCH / "results"
    out.mkdir(exist_ok=True)
    (out / "runtime.json").write_text(json.dumps({"loads": rows, "cold_start_first_token_s": cold}, indent=2))


if __name__ == "__main__":
    main()
