"""Several inferrelay servers sharing one Redis (docs/scaling.md): one rate limit, one cooldown, no 5xx when
Redis goes, shared again when it returns. Real processes all through: redis-server, minimal upstreams, servers."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.redis_server import RedisServer, running_redis
from tests.upstreams import Upstream, running_upstreams

pytestmark = pytest.mark.slow
redis_server = pytest.fixture(running_redis)
upstreams = pytest.fixture(running_upstreams)

BOUND_S = 60
RETRY_S = 1.1  # past state/failover.py's RETRY_S: a down Redis is asked again


def config(folder: Path, redis_url: str, first: Upstream, spare: Upstream, on_failure: str = "open") -> Path:
    """`bench` walks provider `first` (rpm 10, three failures open its circuit for a minute), then `spare`."""
    folder.mkdir()
    providers = "providers:\n"
    for name, upstream, extra in ((("first", first, "    rate_limits: {rpm: 10}\n    cooldown_s: 60\n")),
                                  ("spare", spare, "")):  # fmt: skip
        providers += (
            f"  {name}:\n    type: openai_compatible\n    base_url: http://127.0.0.1:{upstream.port}/v1\n"
            f"    health_interval_s: 0\n    max_retries: 0\n{extra}"
        )
    (folder / "providers.yaml").write_text(providers)
    (folder / "model-mappings.yaml").write_text(
        "exact_matches:\n  bench: {chain: first-then-spare}\n"
        "fallback_chains:\n  first-then-spare:\n    - {provider: first, model: bench}\n"
        "    - {provider: spare, model: bench}\n"
        f"runtime:\n  state: {redis_url}\n  state_failure: {on_failure}\n  request_log: false\n"
    )
    return folder


def chat(url: str) -> httpx.Response:
    body = {"model": "bench", "messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=BOUND_S)


def spread(urls: list[str], count: int) -> list[httpx.Response]:
    """`count` requests, eight at a time, taking turns across `urls`."""
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(chat, [urls[i % len(urls)] for i in range(count)], timeout=BOUND_S))


def provider(url: str, name: str) -> dict[str, Any]:
    body = httpx.get(f"{url}/api/v1/providers", timeout=BOUND_S).json()
    return next(p for p in body["providers"] if p["name"] == name)


def state(url: str) -> dict[str, Any]:
    status: dict[str, Any] = httpx.get(f"{url}/api/v1/providers", timeout=BOUND_S).json()["state"]
    return status


def served_by(responses: list[httpx.Response], backend: str) -> int:
    return sum(1 for r in responses if r.headers.get("x-inferrelay-backend") == backend)


def test_two_servers_share_one_rate_limit(
    start_server: Any, tmp_path: Path, redis_server: RedisServer, upstreams: Callable[[], Upstream]
) -> None:
    folder = config(tmp_path / "config", redis_server.url, upstreams(), upstreams())
    servers = [start_server(tmp_path / f"home-{i}", "--config", str(folder)) for i in range(2)]
    expected = {"backend": "redis", "shared": True, "url": redis_server.url, "reachable": True, "on_failure": "open"}
    assert state(servers[0].url) == {**expected, "failures": 0, "fallbacks": 0}
    responses = spread([s.url for s in servers], 30)
    assert [r.status_code for r in responses] == [200] * 30
    assert served_by(responses, "first") == 10, "rpm 10 across both servers: exactly 10 reach the provider"
    assert served_by(responses, "spare") == 20
    admitted = sum(provider(s.url, "first")["requests"] for s in servers)
    assert admitted == 10, "the provider's own counts agree: 10 requests sent in all"


def test_a_provider_failing_at_one_server_cools_down_at_the_other(
    start_server: Any, tmp_path: Path, redis_server: RedisServer, upstreams: Callable[[], Upstream]
) -> None:
    first = upstreams()
    folder = config(tmp_path / "config", redis_server.url, first, upstreams())
    seer, other = (start_server(tmp_path / f"home-{i}", "--config", str(folder)) for i in range(2))
    assert chat(seer.url).headers["x-inferrelay-backend"] == "first"
    first.stop()  # the provider dies
    for _ in range(3):  # three failures open its circuit
        response = chat(seer.url)
        assert response.status_code == 200
        assert response.headers["x-inferrelay-backend"] == "spare"
    assert provider(seer.url, "first")["cooldown"]["state"] == "open"
    # Read after the seer's answer, which came after its write to Redis: no waiting, no race.
    seen = provider(other.url, "first")
    assert seen["cooldown"]["state"] == "open", seen
    assert 50 < seen["cooldown"]["cooldown_remaining_s"] <= 60
    response = chat(other.url)
    assert response.status_code == 200
    assert response.headers["x-inferrelay-backend"] == "spare"
    assert response.headers["x-inferrelay-attempts"] == "first=cooling_down"
    assert provider(other.url, "first")["requests"] == 0, "the other server never sent it a request"


def test_redis_killed_mid_run_no_5xx_and_shared_again_after(
    start_server: Any, tmp_path: Path, redis_server: RedisServer, upstreams: Callable[[], Upstream]
) -> None:
    first, spare = upstreams(), upstreams()
    servers = [
        start_server(
            tmp_path / f"home-{i}", "--config", str(config(tmp_path / f"open-{i}", redis_server.url, first, spare))
        )
        for i in range(2)
    ]
    closed_config = config(tmp_path / "closed", redis_server.url, first, spare, on_failure="closed")
    closed = start_server(tmp_path / "home-closed", "--config", str(closed_config))
    urls = [s.url for s in servers]
    assert [r.status_code for r in spread([*urls, closed.url], 6)] == [200] * 6

    redis_server.kill()
    during = spread(urls, 20)
    assert [r.status_code for r in during] == [200] * 20, "fail open: each server on its own state, no 5xx"
    refused = spread([closed.url], 5)
    assert [r.status_code for r in refused] == [429] * 5, "fail closed: 429, never a 5xx"
    assert all(float(r.headers["retry-after"]) > 0 for r in refused)
    assert "does not answer" in refused[0].json()["error"]["message"]
    for url in (*urls, closed.url):
        down = state(url)
        assert down["reachable"] is False
        assert down["failures"] >= 1

    redis_server.start()  # a fresh, empty Redis on the same port
    subprocess.run(["sleep", str(RETRY_S)], check=True)
    after = spread(urls, 30)
    assert [r.status_code for r in after] == [200] * 30
    assert served_by(after, "first") == 10, "shared again: one rpm 10 across both servers"
    deadline = time.monotonic() + 30  # a store call that timed out on a loaded machine marks it down for a second
    while not all(state(url)["reachable"] for url in urls) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert all(state(url)["reachable"] for url in urls)
    assert chat(closed.url).status_code == 200, "the closed server serves again"


def test_least_busy_weighs_the_requests_in_flight_at_the_other_server(
    start_server: Any, tmp_path: Path, redis_server: RedisServer, upstreams: Callable[[], Upstream]
) -> None:
    slow_config = tmp_path / "slow-config"
    slow_config.mkdir()
    (slow_config / "model-mappings.yaml").write_text(
        "models:\n  slow:\n    source: fake\n    capabilities: [chat, completion]\n    engines: [fake]\n"
        "    engine_options: {fake: {latency_ms: 1000}}\n"
    )
    slow = start_server(tmp_path / "home-slow", "--config", str(slow_config))  # provider x: answers in seconds
    fast = upstreams()  # provider y
    folder = tmp_path / "config"
    folder.mkdir()
    (folder / "providers.yaml").write_text(
        f"providers:\n  x:\n    type: openai_compatible\n    base_url: {slow.url}/v1\n    health_interval_s: 0\n"
        f"  y:\n    type: openai_compatible\n    base_url: http://127.0.0.1:{fast.port}/v1\n    health_interval_s: 0\n"
    )
    (folder / "model-mappings.yaml").write_text(
        "exact_matches:\n  only-x: {provider: x, model: slow}\n  pair: {group: pair}\n"
        "load_balancing:\n  pair:\n    strategy: least_busy\n    members: [{provider: x, model: slow}, {provider: y}]\n"
        f"runtime:\n  state: {redis_server.url}\n  request_log: false\n"
    )
    busy, other = (start_server(tmp_path / f"home-{i}", "--config", str(folder)) for i in range(2))
    body = {"model": "only-x", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 20}
    with ThreadPoolExecutor(3) as pool:
        held = [
            pool.submit(httpx.post, f"{busy.url}/v1/chat/completions", json=body, timeout=BOUND_S) for _ in range(3)
        ]
        for _ in range(BOUND_S * 20):  # a bound that detects a hang: the other server learns of the three
            if provider(other.url, "x")["in_flight_elsewhere"] == 3:
                break
            subprocess.run(["sleep", "0.05"], check=True)
        else:
            raise AssertionError("the other server never saw the three requests in flight at the busy one")
        chosen = [chat_model(other.url, "pair").headers["x-inferrelay-backend"] for _ in range(4)]
        assert chosen == ["y"] * 4, "x has three requests in flight elsewhere: least_busy sends to y every time"
        assert [f.result(timeout=BOUND_S).status_code for f in held] == [200] * 3


def chat_model(url: str, model: str) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=BOUND_S)
