"""Keys' limits and budgets shared by two servers through one Redis (docs/keys.md): one rpm, one budget, one count of
what a key spent, whichever server answers. Real processes all through: redis-server, two servers on one home, the
official client."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from inferrelay.config.embedded import MINILM
from tests.e2e.test_keys import client, keys, make_key, status_of
from tests.redis_server import RedisServer, running_redis

pytestmark = pytest.mark.slow
redis_server = pytest.fixture(running_redis)

BOUND_S = 60


def shared_config(folder: Path, redis_url: str) -> Path:
    folder.mkdir()
    (folder / "model-mappings.yaml").write_text(f"runtime:\n  state: {redis_url}\n  state_failure: closed\n")
    return folder


def embed(server: Any, key: str, text: str = "one") -> tuple[int, dict[str, Any], Any]:
    """The status, the error body (for a refusal) and the answer (for a success) of one embedding."""
    answers: list[Any] = []
    status, body = status_of(lambda: answers.append(client(server, key).embeddings.create(model=MINILM.name,
                                                                                          input=text)))  # fmt: skip
    return status, body, answers[0] if answers else None


def usage_at(server: Any, admin: str, name: str) -> dict[str, Any]:
    answer = httpx.get(f"{server.url}/api/v1/keys/{name}/usage", headers={"authorization": f"Bearer {admin}"},
                       timeout=BOUND_S)  # fmt: skip
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def test_two_servers_share_a_keys_rpm_and_budget(
    own_home: Path, tmp_path: Path, start_server: Any, redis_server: RedisServer
) -> None:
    admin = make_key(own_home, "ops", "--admin")
    slow = make_key(own_home, "slow", "--rpm", "5")
    budget = 5
    small = make_key(own_home, "small", "--budget-tokens", str(budget))
    config = shared_config(tmp_path / "config", redis_server.url)
    a, b = (start_server(own_home, "--config", str(config)) for _ in range(2))
    for server in (a, b):  # the model loaded, and each server's request log read, before any limit is tried
        assert embed(server, admin)[0] == 200

    # rpm 5 across both servers: ten requests at once, taking turns, and exactly five answered
    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(lambda server: embed(server, slow), [a, b] * 5, timeout=BOUND_S))
    statuses = sorted(status for status, _, _ in results)
    assert statuses == [200] * 5 + [429] * 5, statuses
    assert {body["code"] for status, body, _ in results if status == 429} == {"rate_limit_exceeded"}

    # a budget spent at one server is spent at the other
    status, _, answer = embed(a, small, "one two three four five six seven eight")
    assert status == 200
    spent = answer.usage.total_tokens
    assert spent >= budget, "the first answer alone spends the budget"
    status, body, _ = embed(b, small)
    assert (status, body.get("code")) == (429, "budget_exhausted")
    assert usage_at(b, admin, "small")["spent_tokens"] == spent, "b counts what a's answer spent"
    assert usage_at(a, admin, "small")["spent_tokens"] == spent
    assert embed(a, small)[1].get("code") == "budget_exhausted"

    a.stop()
    b.stop()  # every answer is in the shared request log before the processes exit
    rows = json.loads(keys(own_home, "usage", "small", "--json").stdout)
    assert sum(row["total_tokens"] for row in rows) == spent, "`inferrelay keys usage` agrees"


def test_redis_gone_a_keyed_request_fails_closed_with_a_429(
    own_home: Path, tmp_path: Path, start_server: Any, redis_server: RedisServer
) -> None:
    plain = make_key(own_home, "plain")
    server = start_server(own_home, "--config", str(shared_config(tmp_path / "config", redis_server.url)))
    assert embed(server, plain)[0] == 200
    redis_server.kill()
    status, body, _ = embed(server, plain)
    assert (status, body.get("code")) == (429, "rate_limit_exceeded"), "fail closed: refused, never a 5xx"
