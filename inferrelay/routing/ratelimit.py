"""rpm and tpm limits per provider, as token buckets that refill continuously."""

from __future__ import annotations

import time
from collections.abc import Callable

from inferrelay.config.providers import RemoteProvider
from inferrelay.token_bucket import TokenBucket


class RateLimiter:
    def __init__(self, providers: dict[str, RemoteProvider], clock: Callable[[], float] = time.monotonic) -> None:
        self._buckets: dict[str, list[tuple[TokenBucket, bool]]] = {}
        for name, config in providers.items():
            limits = config.rate_limits
            buckets = []
            if limits.rpm:
                buckets.append((TokenBucket(limits.rpm, clock), False))
            if limits.tpm:
                buckets.append((TokenBucket(limits.tpm, clock), True))
            self._buckets[name] = buckets

    def counts_tokens(self, provider: str) -> bool:
        return any(counts for _, counts in self._buckets.get(provider, []))

    def admit(self, provider: str, tokens: int) -> float:
        """Take one request and `tokens` from the provider's buckets, or say how long to wait (taking nothing)."""
        buckets = self._buckets.get(provider, [])
        waits = [bucket.wait_for(tokens if counts_tokens else 1) for bucket, counts_tokens in buckets]
        wait = max(waits, default=0.0)
        if wait > 0:
            return wait
        for bucket, counts_tokens in buckets:
            bucket.take(tokens if counts_tokens else 1)
        return 0.0


def estimate_tokens(body: dict[str, object]) -> int:
    """A request's tokens before any tokenizer sees it: about 4 characters a token, plus the answer's budget."""
    text = body.get("messages") or body.get("prompt") or body.get("input") or ""
    answer = body.get("max_completion_tokens") or body.get("max_tokens") or 0
    return len(str(text)) // 4 + (answer if isinstance(answer, int) else 0)
