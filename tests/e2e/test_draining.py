"""SIGTERM drains (server/draining.py), alone and under `serve --workers 2` (server/workers.py): /ready turns
503 at once, every request already accepted is answered, then the processes exit."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_shared_state import served_by, spread
from tests.redis_server import RedisServer, running_redis
from tests.upstreams import Upstream, running_upstreams

pytestmark = pytest.mark.slow
redis_server = pytest.fixture(running_redis)
upstreams = pytest.fixture(running_upstreams)

BOUND_S = 60
LOAD = 12
SLOW = """\
models:
  slow:
    source: fake
    capabilities: [chat, completion]
    engines: [fake]
    engine_options: {fake: {latency_ms: 400}}
"""


def chat(url: str, model: str = "slow") -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi there"}], "max_tokens": 3}
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=BOUND_S)


def until(check: Callable[[], bool], what: str) -> None:
    """A bound that detects a hang, not a timing assertion."""
    for _ in range(BOUND_S * 20):
        if check():
            return
        subprocess.run(["sleep", "0.05"], check=True)
    raise AssertionError(f"never saw: {what}")


def in_queue(url: str) -> int:
    queues = httpx.get(f"{url}/ready", timeout=BOUND_S).json()["queues"]
    return sum(q["waiting"] + q["running"] for q in queues)


def test_sigterm_under_load_answers_every_accepted_request(start_server: Any, tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.mkdir()
    (config / "model-mappings.yaml").write_text(
        SLOW + "runtime:\n  drain_grace: 5s\n  drain_timeout: 2m\n  request_log: false\n"
    )
    server = start_server(tmp_path / "home", "--config", str(config))
    assert chat(server.url).status_code == 200  # loaded before the load
    with ThreadPoolExecutor(LOAD) as pool:
        accepted: list[Future[httpx.Response]] = [pool.submit(chat, server.url) for _ in range(LOAD)]
        until(lambda: in_queue(server.url) == LOAD, f"{LOAD} requests in the model's queue")
        server.process.send_signal(signal.SIGTERM)
        draining = httpx.get(f"{server.url}/ready", timeout=BOUND_S)
        assert draining.status_code == 503
        assert draining.json()["reasons"][0] == "the server is starting or shutting down"
        answers = [f.result(timeout=BOUND_S) for f in accepted]
    assert [a.status_code for a in answers] == [200] * LOAD
    assert all(a.json()["choices"][0]["message"]["content"] for a in answers)
    server.process.wait(timeout=BOUND_S)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.url}/health", timeout=BOUND_S)


def test_two_workers_share_the_port_and_redis_and_drain_together(
    start_server: Any, tmp_path: Path, redis_server: RedisServer, upstreams: Callable[[], Upstream]
) -> None:
    config = tmp_path / "config"
    config.mkdir()
    first, spare = upstreams(), upstreams()
    providers = "providers:\n"
    for name, upstream, extra in (("first", first, "    rate_limits: {rpm: 10}\n"), ("spare", spare, "")):
        providers += f"  {name}:\n    type: openai_compatible\n    base_url: http://127.0.0.1:{upstream.port}/v1\n"
        providers += f"    health_interval_s: 0\n    max_retries: 0\n{extra}"
    (config / "providers.yaml").write_text(providers)
    (config / "model-mappings.yaml").write_text(
        SLOW + "exact_matches:\n  bench: {chain: first-then-spare}\n"
        "fallback_chains:\n  first-then-spare:\n    - {provider: first, model: bench}\n"
        f"    - {{provider: spare, model: bench}}\nruntime:\n  state: {redis_server.url}\n  request_log: false\n"
    )
    server = start_server(tmp_path / "home", "--config", str(config), "--workers", "2")
    parent = server.process.pid
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    assert len(children) == 2, "two server processes under the parent"

    responses = spread([server.url], 30)
    assert [r.status_code for r in responses] == [200] * 30
    assert served_by(responses, "first") == 10, "rpm 10 across both workers: they share it through Redis"

    with ThreadPoolExecutor(LOAD) as pool:
        accepted = [pool.submit(chat, server.url) for _ in range(LOAD)]
        # /ready shows one worker's queue only; a first answer (1.2 s of work) means all twelve connections,
        # opened at once, were accepted long before. One not accepted would fail below, not pass.
        until(lambda: any(f.done() for f in accepted), "a first answer")
        server.process.send_signal(signal.SIGTERM)
        answers = [f.result(timeout=BOUND_S) for f in accepted]
    assert [a.status_code for a in answers] == [200] * LOAD
    server.process.wait(timeout=BOUND_S)
    for child in children:
        assert not Path(f"/proc/{child}").exists() or "zombie" in Path(f"/proc/{child}/status").read_text()


def test_workers_go_when_their_parent_is_killed_outright(start_server: Any, tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.mkdir()
    (config / "model-mappings.yaml").write_text(SLOW)
    server = start_server(tmp_path / "home", "--config", str(config), "--workers", "2")
    parent = server.process.pid
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    assert len(children) == 2
    assert chat(server.url).status_code == 200
    server.process.kill()
    server.process.wait(timeout=BOUND_S)
    until(lambda: not any(alive(child) for child in children), "both workers gone")


def alive(pid: str) -> bool:
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "zombie" not in status.read_text()
