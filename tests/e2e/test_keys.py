"""Keys, against a real server and the official client: who may call, which models, how much, and the management
plane only an admin key may touch (docs/keys.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from inferrelay.config.embedded import MINILM, SMOLLM2

pytestmark = pytest.mark.slow

CHAT = [{"role": "user", "content": "Say hi."}]


def keys(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "INFERRELAY_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "inferrelay.cli", "keys", *args], env=env, capture_output=True, text=True, timeout=60
    )


def make_key(home: Path, name: str, *args: str) -> str:
    done = keys(home, "create", name, *args)
    assert done.returncode == 0, done.stderr
    secret = done.stdout.strip()
    assert secret.startswith("irk_")
    return secret


@pytest.fixture
def home(own_home: Path) -> Path:
    return own_home


def client(server: Any, key: str | None) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key or "none", max_retries=0, timeout=120)


def status_of(call: Any) -> tuple[int, dict[str, Any]]:
    try:
        call()
    except openai.APIStatusError as exc:
        return exc.status_code, exc.body if isinstance(exc.body, dict) else {}
    return 200, {}


def test_keys_gate_every_route_and_limit_models(home: Path, start_server: Any) -> None:
    admin = make_key(home, "ops", "--admin")
    embed_only = make_key(home, "search", "--models", MINILM.name)
    chatter = make_key(home, "chatter")
    expired = make_key(home, "old", "--expires", "1s")
    revoked = make_key(home, "gone")
    assert keys(home, "revoke", "gone").returncode == 0
    time.sleep(1.1)
    server = start_server(home)

    for secret, why in [(None, "none"), ("irk_wrong", "wrong"), (revoked, "revoked"), (expired, "expired")]:
        c = client(server, secret)
        for call in (
            lambda c=c: c.chat.completions.create(model=SMOLLM2.name, messages=CHAT, max_tokens=2),
            lambda c=c: c.embeddings.create(model=MINILM.name, input="hello"),
            lambda c=c: c.models.list(),
        ):
            status, body = status_of(call)
            assert status == 401, why
            assert body["code"] == "invalid_api_key"
            assert body["type"] == "invalid_request_error"
    # the OpenAI client sends the key as a bearer token; x-api-key works too
    plain = httpx.get(f"{server.url}/v1/models", headers={"x-api-key": chatter}, timeout=30)
    assert plain.status_code == 200

    limited = client(server, embed_only)
    status, body = status_of(lambda: limited.chat.completions.create(model=SMOLLM2.name, messages=CHAT, max_tokens=2))
    assert (status, body["code"]) == (403, "model_not_allowed")
    assert len(limited.embeddings.create(model=MINILM.name, input="hello").data[0].embedding) == 384
    assert [m.id for m in limited.models.list().data] == [MINILM.name]
    assert len(client(server, chatter).models.list().data) > 1

    # health, readiness and metrics stay open to probes and scrapers
    for path in ("/health", "/ready", "/metrics"):
        assert httpx.get(f"{server.url}{path}", timeout=30).status_code == 200, path

    # the management plane: an inference key is refused, an admin key is served
    for secret, expected in ((chatter, 403), (admin, 200)):
        headers = {"authorization": f"Bearer {secret}"}
        unload = httpx.post(f"{server.url}/api/v1/runtime/models/unload", json={"name": MINILM.name},
                            headers=headers, timeout=60)  # fmt: skip
        assert unload.status_code == expected, unload.text
        listed = httpx.get(f"{server.url}/api/v1/keys", headers=headers, timeout=30)
        assert listed.status_code == expected
    assert "secret" not in json.dumps(listed.json())
    assert revoked not in listed.text

    # revocation through the CLI takes effect on the next request, without a restart
    assert client(server, chatter).models.list().data
    assert keys(home, "revoke", "chatter").returncode == 0
    assert status_of(lambda: client(server, chatter).models.list())[0] == 401


def test_rpm_budget_and_usage(home: Path, start_server: Any) -> None:
    make_key(home, "ops", "--admin")
    slow = make_key(home, "slow", "--rpm", "5")
    budget = 40
    small = make_key(home, "small", "--budget-tokens", str(budget))
    server = start_server(home)

    c = client(server, slow)
    for _ in range(5):
        c.embeddings.create(model=MINILM.name, input="one")
    refused = httpx.post(f"{server.url}/v1/embeddings", json={"model": MINILM.name, "input": "six"},
                         headers={"authorization": f"Bearer {slow}"}, timeout=30)  # fmt: skip
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"

    c = client(server, small)
    # count what the answers reported, call by call, until the budget refuses
    reported = 0
    calls = 0
    answers: list[Any] = []
    while True:
        status, body = status_of(
            lambda: answers.append(c.chat.completions.create(model=SMOLLM2.name, messages=CHAT, max_tokens=8))
        )
        if status == 429:
            assert body["code"] == "budget_exhausted"
            break
        answer = answers[-1]
        assert answer.usage is not None
        reported += answer.usage.total_tokens
        calls += 1
        assert calls < 20, "the budget never refused"
    assert reported >= budget

    metrics = httpx.get(f"{server.url}/metrics", timeout=30).text
    counted = [line for line in metrics.splitlines() if line.startswith('inferrelay:key_tokens_total{key_name="small"')]
    assert [float(line.rsplit(" ", 1)[1]) for line in counted] == [reported]
    server.stop()  # the request log is written through before the process exits
    usage = json.loads(keys(home, "usage", "small", "--json").stdout)
    assert sum(row["total_tokens"] for row in usage) == reported
    assert {row["model"] for row in usage} == {SMOLLM2.name}


def test_serving_a_public_address_needs_a_key(tmp_path: Path) -> None:
    env = {**os.environ, "INFERRELAY_HOME": str(tmp_path / "home")}
    done = subprocess.run(
        [sys.executable, "-m", "inferrelay.cli", "serve", "--host", "0.0.0.0", "--port", "1"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0
    assert "inferrelay keys create" in done.stderr
    assert "--insecure-no-auth" in done.stderr


def test_the_callers_key_never_reaches_a_provider_nor_the_log(
    tmp_path: Path, test_home: Path, start_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The front server holds one key for its callers; its provider (another inferrelay) holds another, which the
    front sends from api_key_env. Had the front forwarded its caller's header, the provider would answer 401."""
    upstream_home, front_home = tmp_path / "up", tmp_path / "front"
    for home in (upstream_home, front_home):
        home.mkdir()
        (home / "cache").symlink_to(test_home / "cache")
    upstream_key = make_key(upstream_home, "front-server")
    caller_key = make_key(front_home, "caller")
    upstream = start_server(upstream_home)
    config = tmp_path / "config"
    config.mkdir()
    (config / "providers.yaml").write_text(
        f"providers:\n  up:\n    type: openai_compatible\n    base_url: {upstream.url}/v1\n"
        "    api_key_env: UPSTREAM_KEY\n    max_retries: 0\n    health_interval_s: 0\n"
    )
    (config / "model-mappings.yaml").write_text(
        f"exact_matches:\n  remote-embed: {{provider: up, model: {MINILM.name}}}\n"
    )
    monkeypatch.setenv("UPSTREAM_KEY", upstream_key)
    front = start_server(front_home, "--config", str(config))

    answer = client(front, caller_key).embeddings.create(model="remote-embed", input="hello")
    assert len(answer.data[0].embedding) == 384
    front.stop()
    upstream.stop()
    for home, name in ((front_home, "caller"), (upstream_home, "front-server")):
        raw = b"".join(p.read_bytes() for p in home.glob("requests.sqlite3*"))  # with the WAL, if left
        assert caller_key.encode() not in raw
        assert upstream_key.encode() not in raw
        rows = json.loads(keys(home, "usage", "--json").stdout)
        assert [(r["key"], r["requests"]) for r in rows] == [(name, 1)]


def test_a_keys_timeout_ends_its_long_requests(home: Path, start_server: Any) -> None:
    hasty = make_key(home, "hasty", "--timeout", "1s")
    patient = make_key(home, "patient")
    server = start_server(home)
    story = [{"role": "user", "content": "Write a very long story about the sea."}]
    long = {"model": SMOLLM2.name, "messages": story, "max_tokens": 1500, "temperature": 1.0, "seed": 3}
    ended = httpx.post(f"{server.url}/v1/chat/completions", json=long, headers={"authorization": f"Bearer {hasty}"},
                       timeout=120)  # fmt: skip
    assert ended.status_code == 504, ended.text
    assert ended.json()["error"]["code"] == "timeout"
    short = client(server, patient).chat.completions.create(model=SMOLLM2.name, messages=CHAT, max_tokens=4)
    assert short.choices[0].message.content is not None
