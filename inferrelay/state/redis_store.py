"""The routing state in Redis, shared by every inferrelay server that names the same `state: redis://...`.

Each operation is one round trip: a request's admission (the provider's health and cooldown, and its token-bucket
draws; or a key's budget, tpm and rpm) is one Lua script, atomic across servers and timed by Redis's own clock. Any
failure is raised as `StoreDown`; state/failover.py decides.

A key's spent tokens are one counter that never expires. Where it is missing (a new Redis, or one that restarted
empty) the first server to touch the key sets it from what it knows, with SET NX: from its request log and its own
answers since (access/quota.py). Servers on one home share one log, so one log's count is taken once, never added
twice; servers with separate logs each count only what their own log holds, and only the first one's counts.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from inferrelay.state.base import Admission, Draw, KeyLimits, KeyVerdict, ProviderView, StoreDown

PREFIX = "inferrelay:"
TIMEOUT_S = 0.25
"""A Redis that does not answer in this long counts as down: a request never waits on it for longer."""

BUCKETS = """
local function clock()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function level(key, cap, now)
  local held = redis.call('HMGET', key, 'tokens', 'at')
  local have = tonumber(held[1]) or cap
  local at = tonumber(held[2]) or now
  return math.min(cap, have + math.max(0, now - at) * cap / 60)
end
local function keep(key, cap, tokens, now)
  redis.call('HSET', key, 'tokens', tostring(tokens), 'at', tostring(now))
  redis.call('EXPIRE', key, math.max(120, math.ceil((cap - tokens) * 60 / cap)))
end
local function draw(first, arg)
  local now = clock()
  local wait, tokens = 0, {}
  for i = first, #KEYS do
    local cap = tonumber(ARGV[arg + 2 * (i - first)])
    local amount = math.min(tonumber(ARGV[arg + 2 * (i - first) + 1]), cap)
    local have = level(KEYS[i], cap, now)
    tokens[i] = have - amount
    if have < amount then wait = math.max(wait, (amount - have) * 60 / cap) end
  end
  if wait > 0 then return wait end
  for i = first, #KEYS do keep(KEYS[i], tonumber(ARGV[arg + 2 * (i - first)]), tokens[i], now) end
  return 0
end
"""
"""Token buckets as in inferrelay/token_bucket.py, timed by Redis's clock. `level`: a bucket's tokens refilled to
now; `keep`: store them (below zero after a debit; kept until they would have refilled). `draw`: take from every
bucket from KEYS[first] on, or from none and return the wait; ARGV from `arg` on holds (per minute, amount) for
each."""

TAKE = BUCKETS + "return tostring(draw(1, 1))"

ADMIT = (
    BUCKETS
    + """
local health = redis.call('GET', KEYS[1]) or ''
local cool = redis.call('PTTL', KEYS[2])
if health == '0' or cool > 0 then return {health, cool, '0'} end
return {health, cool, tostring(draw(3, 1))}
"""
)
"""KEYS: the provider's health and cooldown, then its buckets: no draw from a provider that will be skipped."""

KEY_ADMIT = (
    BUCKETS
    + """
redis.call('SET', KEYS[1], ARGV[1], 'NX')
local spent = tonumber(redis.call('GET', KEYS[1]))
local budget, tpm = tonumber(ARGV[2]), tonumber(ARGV[3])
if budget >= 0 and spent >= budget then return {spent, 'budget', '0'} end
if tpm > 0 then
  local have = level(KEYS[2], tpm, clock())
  if have < 1 then return {spent, 'tpm', tostring((1 - have) * 60 / tpm)} end
end
local wait = draw(3, 4)
if wait > 0 then return {spent, 'rpm', tostring(wait)} end
return {spent, '', '0'}
"""
)
"""A key's request. KEYS: its spent count, its tpm bucket, then its rpm bucket if it has an rpm; ARGV: the seed of a
missing count, the budget (-1: none), the tpm (0: none), then (rpm, 1). The tpm is checked, not drawn from (an
answer's tokens are taken when it is done, KEY_SPEND), as access/quota.py does in process."""

KEY_SPEND = (
    BUCKETS
    + """
redis.call('SET', KEYS[1], ARGV[1], 'NX')
local spent = redis.call('INCRBY', KEYS[1], ARGV[2])
local tpm = tonumber(ARGV[3])
if tpm > 0 then
  local now = clock()
  keep(KEYS[2], tpm, level(KEYS[2], tpm, now) - tonumber(ARGV[2]), now)
end
return spent
"""
)
"""An answer's tokens: added to the key's count (seeded first if missing) and debited from its tpm, below zero if
need be. KEYS: the count, the tpm bucket; ARGV: the seed, the tokens, the tpm (0: none)."""

IN_FLIGHT = """
local totals = {}
for i, provider in ipairs(KEYS) do
  local members = ARGV[1] .. 'inflight:' .. provider
  local own = members .. ':' .. ARGV[2]
  redis.call('SET', own, ARGV[i + 3], 'PX', ARGV[3])
  redis.call('SADD', members, ARGV[2])
  redis.call('PEXPIRE', members, ARGV[3])
  local total = 0
  for _, server in ipairs(redis.call('SMEMBERS', members)) do
    local count = redis.call('GET', members .. ':' .. server)
    if count then total = total + tonumber(count) else redis.call('SREM', members, server) end
  end
  totals[i] = total
end
return totals
"""
"""Each server's in-flight count per provider under its own key, expiring unless renewed: a server that dies
stops counting within IN_FLIGHT_TTL_MS. KEYS: provider names; ARGV: prefix, server id, ttl, then the counts."""
IN_FLIGHT_TTL_MS = 3000


class RedisState:
    def __init__(self, url: str) -> None:
        try:
            import redis.asyncio as aioredis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff
        except ImportError as exc:
            raise RuntimeError(f"state: {url} needs redis-py: pip install 'inferrelay[redis]'") from exc
        self._url = url
        self._redis = aioredis.from_url(
            url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S, retry=Retry(NoBackoff(), 0)
        )
        self._take = self._redis.register_script(TAKE)
        self._admit = self._redis.register_script(ADMIT)
        self._in_flight = self._redis.register_script(IN_FLIGHT)
        self._key_admit = self._redis.register_script(KEY_ADMIT)
        self._key_spend = self._redis.register_script(KEY_SPEND)
        self._server = uuid.uuid4().hex

    async def take(self, draws: list[Draw]) -> float:
        if not draws:
            return 0.0
        keys = [f"{PREFIX}bucket:{draw.bucket}" for draw in draws]
        args = [value for draw in draws for value in (draw.per_minute, draw.amount)]
        return float(await self._run(self._take(keys=keys, args=args)))

    async def view(self, provider: str) -> ProviderView:
        pipe = self._redis.pipeline(transaction=False)
        pipe.get(f"{PREFIX}health:{provider}")
        pipe.pttl(f"{PREFIX}cool:{provider}")
        health, cool_ms = await self._run(pipe.execute())
        healthy = None if health is None else health == b"1"
        return ProviderView(healthy, max(0, cool_ms) / 1000)

    async def admit(self, provider: str, draws: list[Draw]) -> Admission:
        keys = [f"{PREFIX}health:{provider}", f"{PREFIX}cool:{provider}"]
        keys += [f"{PREFIX}bucket:{draw.bucket}" for draw in draws]
        args = [value for draw in draws for value in (draw.per_minute, draw.amount)]
        health, cool_ms, wait = await self._run(self._admit(keys=keys, args=args))
        healthy = None if health == b"" else health == b"1"
        return Admission(ProviderView(healthy, max(0, int(cool_ms)) / 1000), float(wait))

    async def share_in_flight(self, mine: dict[str, int]) -> dict[str, int]:
        if not mine:
            return {}
        names = list(mine)
        args: list[str | int] = [PREFIX, self._server, IN_FLIGHT_TTL_MS, *(mine[name] for name in names)]
        totals = await self._run(self._in_flight(keys=names, args=args))
        return {name: int(total) for name, total in zip(names, totals, strict=True)}

    async def cool(self, provider: str, seconds: float) -> None:
        key, ms = f"{PREFIX}cool:{provider}", max(1, int(seconds * 1000))
        pipe = self._redis.pipeline(transaction=False)
        pipe.set(key, b"1", px=ms, nx=True)
        pipe.pexpire(key, ms, gt=True)  # extends an open cooldown, never shortens it (Redis 7)
        await self._run(pipe.execute())

    async def set_healthy(self, provider: str, healthy: bool, ttl_s: float) -> None:
        value = b"1" if healthy else b"0"
        await self._run(self._redis.set(f"{PREFIX}health:{provider}", value, px=max(1, int(ttl_s * 1000))))

    async def admit_key(self, key: KeyLimits, seed: int, local: Callable[[], KeyVerdict]) -> KeyVerdict:
        keys = [f"{PREFIX}key:{key.name}:spent", f"{PREFIX}key:{key.name}:tpm"]
        args: list[int] = [seed, -1 if key.budget is None else key.budget, key.tpm or 0]
        if key.rpm is not None:
            keys.append(f"{PREFIX}key:{key.name}:rpm")
            args += [key.rpm, 1]
        spent, limit, wait = await self._run(self._key_admit(keys=keys, args=args))
        return KeyVerdict(int(spent), limit.decode() or None, float(wait))

    async def spend_key(self, key: KeyLimits, tokens: int, seed: int, local: Callable[[], int]) -> int:
        keys = [f"{PREFIX}key:{key.name}:spent", f"{PREFIX}key:{key.name}:tpm"]
        return int(await self._run(self._key_spend(keys=keys, args=[seed, tokens, key.tpm or 0])))

    async def key_spent(self, name: str, seed: int, local: Callable[[], int]) -> int:
        key = f"{PREFIX}key:{name}:spent"
        pipe = self._redis.pipeline(transaction=False)
        pipe.set(key, seed, nx=True)
        pipe.get(key)
        return int((await self._run(pipe.execute()))[1])

    def status(self) -> dict[str, object]:
        return {"backend": "redis", "shared": True, "url": redacted(self._url)}

    async def aclose(self) -> None:
        await self._redis.aclose()

    async def _run(self, call: Any) -> Any:
        from redis.exceptions import RedisError

        try:
            return await call
        except (RedisError, OSError) as exc:
            raise StoreDown(f"{type(exc).__name__}: {exc}") from exc


def redacted(url: str) -> str:
    """The URL without its password."""
    scheme, _, rest = url.partition("://")
    if "@" not in rest:
        return url
    return f"{scheme}://***@{rest.rpartition('@')[2]}"
