"""rpm and tpm limits per provider, as token buckets that refill continuously, kept where the state lives
(inferrelay/state/: this process, or Redis shared by several servers)."""

from __future__ import annotations

from inferrelay.config.providers import RemoteProvider
from inferrelay.state.base import Draw, SharedState


class RateLimiter:
    def __init__(self, providers: dict[str, RemoteProvider], state: SharedState) -> None:
        self._state = state
        self._limits: dict[str, list[tuple[str, int, bool]]] = {}  # provider -> (bucket, per minute, counts tokens)
        for name, config in providers.items():
            limits = config.rate_limits
            buckets = []
            if limits.rpm:
                buckets.append((f"provider:{name}:rpm", limits.rpm, False))
            if limits.tpm:
                buckets.append((f"provider:{name}:tpm", limits.tpm, True))
            self._limits[name] = buckets

    def counts_tokens(self, provider: str) -> bool:
        return any(counts for _, _, counts in self._limits.get(provider, []))

    async def admit(self, provider: str, tokens: int) -> float:
        """Take one request and `tokens` from the provider's buckets, or say how long to wait (taking nothing)."""
        draws = self.draws(provider, tokens)
        return await self._state.take(draws) if draws else 0.0

    def draws(self, provider: str, tokens: int) -> list[Draw]:
        """What one request of `tokens` takes from the provider's buckets (the router asks the state with them)."""
        buckets = self._limits.get(provider, [])
        return [Draw(bucket, per_minute, tokens if counts else 1) for bucket, per_minute, counts in buckets]


def estimate_tokens(body: dict[str, object]) -> int:
    """A request's tokens before any tokenizer sees it: about 4 characters a token, plus the answer's budget."""
    text = body.get("messages") or body.get("prompt") or body.get("input") or ""
    answer = body.get("max_completion_tokens") or body.get("max_tokens") or 0
    return len(str(text)) // 4 + (answer if isinstance(answer, int) else 0)
