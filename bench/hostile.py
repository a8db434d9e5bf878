"""Hostile requests against a running server: how long each takes to be refused, and a normal chat's latency
beside it (sent alone first, then while each hostile request is in flight).

    inferrelay serve --port 8000 &
    python bench/hostile.py --url http://127.0.0.1:8000
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from collections.abc import Callable

import httpx

CHAT = "smollm2-135m-instruct"
EMBED = "all-minilm-l6-v2"
NORMAL = {"model": CHAT, "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 8, "temperature": 0}


def hostile_bodies() -> dict[str, Callable[[], tuple[str, str]]]:
    def chat(messages: list[dict[str, str]], **extra: object) -> str:
        return json.dumps({"model": CHAT, "messages": messages, **extra})

    user = [{"role": "user", "content": "hi"}]
    huge, past_context = (
        [{"role": "user", "content": "a " * 2_500_000}],
        [{"role": "user", "content": "a " * 1_950_000}],
    )
    return {
        "chat, one 50 MB message": lambda: ("chat/completions", chat([{"role": "user", "content": "a" * 50_000_000}])),
        "chat, 100,000 messages": lambda: ("chat/completions", chat(user * 100_000, max_tokens=4)),
        "chat, 4 stop strings of 1 MB": lambda: ("chat/completions", chat(user, stop=["x" * 1_000_000] * 4)),
        "chat, 5M characters (under 32 MiB)": lambda: ("chat/completions", chat(huge)),
        "chat, 3.9M characters past the context": lambda: ("chat/completions", chat(past_context)),
        "chat, lone surrogate": lambda: ("chat/completions", chat([{"role": "user", "content": "hi \ud800"}])),
        "completion, lone surrogate": lambda: ("completions", json.dumps({"model": CHAT, "prompt": "x \ud800"})),
        "embeddings, lone surrogate": lambda: ("embeddings", json.dumps({"model": EMBED, "input": "\ud800"})),
        "embeddings, 2049 inputs": lambda: ("embeddings", json.dumps({"model": EMBED, "input": ["a"] * 2049})),
    }  # fmt: skip


def timed(http: httpx.Client, path: str, body: str) -> tuple[float, int, str]:
    start = time.perf_counter()
    response = http.post(f"/v1/{path}", content=body.encode(), headers={"content-type": "application/json"})
    code = response.json().get("error", {}).get("code", "") if response.status_code >= 400 else ""
    return time.perf_counter() - start, response.status_code, code


def normal_latency(http: httpx.Client, runs: int = 5) -> float:
    times = [timed(http, "chat/completions", json.dumps(NORMAL))[0] for _ in range(runs)]
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    args = parser.parse_args()
    with httpx.Client(base_url=args.url, timeout=300) as http, httpx.Client(base_url=args.url, timeout=300) as side:
        timed(http, "chat/completions", json.dumps(NORMAL))  # loads the models
        timed(http, "embeddings", json.dumps({"model": EMBED, "input": "warm"}))
        print(f"normal chat alone: median {normal_latency(http) * 1000:.0f} ms")
        print("| hostile request | status | code | refused in | normal chat sent alongside |")
        print("|---|---|---|---|---|")
        for name, make in hostile_bodies().items():
            path, body = make()
            beside: list[float] = []
            thread = threading.Thread(target=lambda out=beside: out.append(normal_latency(side, 1)))
            thread.start()
            seconds, status, code = timed(http, path, body)
            thread.join()
            print(f"| {name} | {status} | {code} | {seconds * 1000:.0f} ms | {beside[0] * 1000:.0f} ms |")


if __name__ == "__main__":
    main()
