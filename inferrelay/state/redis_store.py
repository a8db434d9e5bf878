"""The routing state in Redis, shared by every inferrelay server that names the same `state: redis://...`.

Each operation is one round trip: a request's admission (the provider's health and cooldown, and its token-bucket
draws) is one Lua script, atomic across servers and timed by Redis's own clock. Any failure is raised as
`StoreDown`; state/failover.py decides.
"""

from __future__ import annotations

import uuid
from typing import Any

from inferrelay.state.base import Admission, Draw, ProviderView, StoreDown

PREFIX = "inferrelay:"
TIMEOUT_S = 0.25
"""A Redis that does not answer in this long counts as down: a request never waits on it for longer."""

DRAW = """
local function draw(first)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
  local wait, tokens = 0, {}
  for i = first, #KEYS do
    local cap = tonumber(ARGV[2 * (i - first) + 1])
    local amount = math.min(tonumber(ARGV[2 * (i - first) + 2]), cap)
    local rate = cap / 60
    local held = redis.call('HMGET', KEYS[i], 'tokens', 'at')
    local have = tonumber(held[1]) or cap
    local at = tonumber(held[2]) or now
    have = math.min(cap, have + math.max(0, now - at) * rate)
    tokens[i] = have - amount
    if have < amount then wait = math.max(wait, (amount - have) / rate) end
  end
  if wait > 0 then return wait end
  for i = first, #KEYS do
    redis.call('HSET', KEYS[i], 'tokens', tostring(tokens[i]), 'at', tostring(now))
    redis.call('EXPIRE', KEYS[i], 120)
  end
  return 0
end
"""
"""Token buckets as in inferrelay/token_bucket.py: take from every bucket from KEYS[first] on, or from none and
return the wait. ARGV holds (per minute, amount) for each."""

TAKE = DRAW + "return tostring(draw(1))"

ADMIT = (
    DRAW
    + """
local health = redis.call('GET', KEYS[1]) or ''
local cool = redis.call('PTTL', KEYS[2])
if health == '0' or cool > 0 then return {health, cool, '0'} end
return {health, cool, tostring(draw(3))}
"""
)
"""KEYS: the provider's health and cooldown, then its buckets: no draw from a provider that will be skipped."""

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
