"""The key store and a key's allowance, without a server: hashes only, states, rereading, limits, budget."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from inferrelay.access.expiry import expires_at
from inferrelay.access.keys import KeyExistsError, KeyStore, digest
from inferrelay.access.quota import KeyQuota
from inferrelay.errors import ErrorKind, InferrelayError
from inferrelay.server.auth import presented_key
from inferrelay.state.failover import FailoverState
from inferrelay.state.redis_store import RedisState
from tests.redis_server import RedisServer, running_redis

redis_server = pytest.fixture(running_redis)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_only_the_hash_is_stored_and_the_secret_finds_its_key(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    assert not store.has_keys()
    key, secret = store.create("ci", models=["a", "b"], rpm=3)
    raw = (tmp_path / "keys.sqlite3").read_bytes()
    assert secret.encode() not in raw
    assert digest(secret).encode() in raw
    assert store.find(secret) == key
    assert store.find(secret + "x") is None
    assert store.find("") is None
    assert key.may_use("a")
    assert not key.may_use("c")
    assert (tmp_path / "keys.sqlite3").stat().st_mode & 0o077 == 0


def test_names_are_unique_and_limits_positive(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    store.create("ci")
    with pytest.raises(KeyExistsError):
        store.create("ci")
    for bad in ({"rpm": 0}, {"tpm": -1}, {"budget_tokens": 0}, {"models": []}):
        with pytest.raises(ValueError):  # noqa: PT011 - the message is checked by the API tests
            store.create("other", **bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):  # noqa: PT011
        store.create("has space")


def test_a_revocation_by_another_process_is_seen_on_the_next_lookup(tmp_path: Path) -> None:
    server_side, cli_side = KeyStore(tmp_path), KeyStore(tmp_path)
    _, secret = cli_side.create("ci")
    found = server_side.find(secret)
    assert found is not None
    assert found.state() == "active"
    with sqlite3.connect(tmp_path / "keys.sqlite3") as db:  # as `inferrelay keys revoke` does, elsewhere
        db.execute("UPDATE keys SET revoked_at = 1 WHERE name = 'ci'")
    again = server_side.find(secret)
    assert again is not None
    assert again.state() == "revoked"


def test_expiry(tmp_path: Path) -> None:
    assert expires_at("30d", now=0) == 30 * 86400
    assert expires_at("12h", now=0) == 12 * 3600
    for bad in ("0d", "-1", "soon", "200000d"):
        with pytest.raises(ValueError):  # noqa: PT011
            expires_at(bad)
    key, _ = KeyStore(tmp_path).create("short", expires_at=10.0)
    assert key.state(now=9.9) == "active"
    assert key.state(now=10.0) == "expired"


def test_rpm_refuses_the_sixth_request_and_says_when(tmp_path: Path) -> None:
    key, _ = KeyStore(tmp_path).create("ci", rpm=5)
    clock = Clock()
    quota = KeyQuota(dict, clock)
    for _ in range(5):
        quota.admit(key)
    with pytest.raises(InferrelayError) as refused:
        quota.admit(key)
    assert refused.value.kind is ErrorKind.RATE_LIMITED
    assert refused.value.retry_after == pytest.approx(12.0)
    assert refused.value.body()["error"]["code"] == "rate_limit_exceeded"
    clock.now += 12.0
    quota.admit(key)


def test_tpm_counts_the_tokens_answers_used(tmp_path: Path) -> None:
    key, _ = KeyStore(tmp_path).create("ci", tpm=600)
    clock = Clock()
    quota = KeyQuota(dict, clock)
    quota.admit(key)
    quota.spend(key, 700)  # one answer may overshoot; the next waits until the bucket is positive again
    with pytest.raises(InferrelayError) as refused:
        quota.admit(key)
    assert refused.value.retry_after == pytest.approx(10.1)  # 101 tokens at 10 a second
    clock.now += 10.1
    quota.admit(key)


def test_a_budget_is_read_back_and_refuses_once_spent(tmp_path: Path) -> None:
    key, _ = KeyStore(tmp_path).create("ci", budget_tokens=100)
    quota = KeyQuota(lambda: {"ci": 90}, Clock())
    quota.admit(key)
    quota.spend(key, 10)
    assert quota.spent("ci") == 100
    with pytest.raises(InferrelayError) as refused:
        quota.admit(key)
    assert refused.value.status == 429
    assert refused.value.body()["error"]["code"] == "budget_exhausted"
    assert refused.value.retry_after is None


def test_the_key_comes_from_a_bearer_token_or_x_api_key() -> None:
    assert presented_key([(b"authorization", b"Bearer irk_abc")]) == "irk_abc"
    assert presented_key([(b"authorization", b"bearer  irk_abc ")]) == "irk_abc"
    assert presented_key([(b"x-api-key", b"irk_xyz")]) == "irk_xyz"
    assert presented_key([(b"authorization", b"Basic Zm9v")]) is None
    assert presented_key([]) is None


def test_a_keys_request_timeout_caps_the_budget(tmp_path: Path) -> None:
    from inferrelay.access import caller
    from inferrelay.config.embedded import MINILM
    from inferrelay.config.runtime import RuntimeSettings
    from inferrelay.config.schema import Settings
    from inferrelay.runtime.catalog import ModelCatalog
    from inferrelay.server.bounds import budget_s

    settings = Settings(models=[], home=tmp_path, runtime=RuntimeSettings(request_timeout=600))
    slow = MINILM.model_copy(update={"request_timeout": 900.0})
    catalog = ModelCatalog([slow])
    store = KeyStore(tmp_path)
    short, _ = store.create("short", request_timeout=5.0)
    plain, _ = store.create("plain")
    assert budget_s(settings, catalog, MINILM.name) == 900.0
    assert budget_s(settings, catalog, "elsewhere") == 600.0
    for key, model, expected in ((short, MINILM.name, 5.0), (short, "elsewhere", 5.0), (plain, MINILM.name, 900.0)):
        token = caller.current.set(key)
        try:
            assert budget_s(settings, catalog, model) == expected
        finally:
            caller.current.reset(token)
    unbounded = Settings(models=[], home=tmp_path, runtime=RuntimeSettings(request_timeout=0))
    token = caller.current.set(short)
    try:
        assert budget_s(unbounded, ModelCatalog([]), "elsewhere") == 5.0
    finally:
        caller.current.reset(token)
    with pytest.raises(ValueError):  # noqa: PT011
        store.create("never", request_timeout=-1)


def test_without_a_shared_state_the_allowance_stays_in_process(tmp_path: Path) -> None:
    from inferrelay.state.local import LocalState

    assert not KeyQuota(dict, state=LocalState()).shared
    assert not KeyQuota(dict).shared


def test_two_servers_on_one_redis_share_a_keys_rpm_and_budget(tmp_path: Path, redis_server: RedisServer) -> None:
    store = KeyStore(tmp_path)
    limited, _ = store.create("limited", rpm=5)
    budgeted, _ = store.create("budgeted", budget_tokens=100)
    log = {"budgeted": 60}  # one home, one request log: both servers read the same

    async def go() -> None:
        a, b = (KeyQuota(lambda: log, state=FailoverState(RedisState(redis_server.url), "open")) for _ in range(2))
        assert a.shared
        refusals: list[InferrelayError | None] = []
        for quota in (a, b) * 5:
            try:
                await quota.admit_shared(limited)
                refusals.append(None)
            except InferrelayError as exc:
                refusals.append(exc)
        codes = sorted("admitted" if r is None else str(r.body()["error"]["code"]) for r in refusals)
        assert codes == ["admitted"] * 5 + ["rate_limit_exceeded"] * 5
        assert all(11 < (r.retry_after or 0) <= 12 for r in refusals if r is not None), "one request every 12 s"
        await a.admit_shared(budgeted)
        a.spend(budgeted, 50)
        await a.settled("budgeted")
        with pytest.raises(InferrelayError) as refused:
            await b.admit_shared(budgeted)
        assert refused.value.body()["error"]["code"] == "budget_exhausted"
        assert await b.spent_shared("budgeted") == 110, "the log's 60 once, and a's 50"
        for quota in (a, b):
            await quota._state.aclose()  # type: ignore[union-attr]

    asyncio.run(go())


def test_redis_gone_a_key_is_counted_in_process_or_refused(tmp_path: Path, redis_server: RedisServer) -> None:
    key, _ = KeyStore(tmp_path).create("ci", rpm=2)

    async def go() -> None:
        opened = FailoverState(RedisState(redis_server.url), "open")
        closed = FailoverState(RedisState(redis_server.url), "closed")
        open_quota, closed_quota = KeyQuota(dict, Clock(), state=opened), KeyQuota(dict, Clock(), state=closed)
        redis_server.kill()
        await open_quota.admit_shared(key)
        await open_quota.admit_shared(key)
        with pytest.raises(InferrelayError) as local:
            await open_quota.admit_shared(key)
        assert local.value.body()["error"]["code"] == "rate_limit_exceeded", "open: this process's own rpm"
        assert opened.status()["fallbacks"] == 3
        with pytest.raises(InferrelayError) as refused:
            await closed_quota.admit_shared(key)
        assert refused.value.status == 429
        assert refused.value.retry_after == pytest.approx(1.0)
        closed_quota.spend(key, 5)
        await closed_quota.settled("ci")
        assert await closed_quota.spent_shared("ci") == 5, "an answer given is counted here all the same"
        await opened.aclose()
        await closed.aclose()

    asyncio.run(go())
