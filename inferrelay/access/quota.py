"""What a key may still spend: requests and tokens per minute, and its token budget.

rpm and tpm are token buckets that refill continuously (a minute's allowance at most), like the providers'
limits (routing/ratelimit.py): a key with rpm 5 gets five requests at once and one more every 12 s. A request is
admitted when its key has a request and a token left (the tokens of an answer are taken when it is done, so a
key may overshoot its tpm by one request, as OpenAI's limits do). The budget counts every token the key's
answers reported; at start it is read back from the request log, so a restart forgets nothing the log keeps.
This state is one server's own; several servers share it through Redis (docs/keys.md).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from inferrelay.access.keys import Key
from inferrelay.errors import ErrorKind, InferrelayError
from inferrelay.token_bucket import TokenBucket


class KeyQuota:
    def __init__(self, spent: Callable[[], dict[str, int]], clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._load_spent = spent
        self._spent: dict[str, int] | None = None  # read from the request log on first use
        self._requests: dict[str, TokenBucket] = {}
        self._tokens: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()

    def admit(self, key: Key) -> None:
        """Take one request from the key's allowance, or raise the 429 that says what ran out."""
        with self._lock:
            if key.budget_tokens is not None and self.spent(key.name) >= key.budget_tokens:
                raise InferrelayError(
                    ErrorKind.RATE_LIMITED,
                    f"key {key.name!r} has spent its budget of {key.budget_tokens} tokens",
                    code="budget_exhausted",
                    hint="Ask an operator for a new key or a larger budget; it does not refill.",
                )
            waits = []
            if key.tpm is not None:
                waits.append(("tokens per minute", key.tpm, self._bucket(self._tokens, key.name, key.tpm).wait_for(1)))
            if key.rpm is not None:
                bucket = self._bucket(self._requests, key.name, key.rpm)
                waits.append(("requests per minute", key.rpm, bucket.wait_for(1)))
            limit = max(waits, key=lambda w: w[2], default=None)
            if limit is not None and limit[2] > 0:
                what, allowed, wait = limit
                raise InferrelayError(
                    ErrorKind.RATE_LIMITED,
                    f"key {key.name!r} is past its limit of {allowed} {what}; retry in {math.ceil(wait)} s",
                    code="rate_limit_exceeded",
                    retry_after=wait,
                    hint="Slow down, or ask an operator for a key with a higher limit.",
                )
            if key.rpm is not None:
                self._requests[key.name].take(1)

    def spend(self, key: Key, tokens: int) -> None:
        """An answer of the key's is done: it used `tokens`."""
        if tokens <= 0:
            return
        with self._lock:
            spent = self._spent_map()
            spent[key.name] = spent.get(key.name, 0) + tokens
            if key.tpm is not None:
                self._bucket(self._tokens, key.name, key.tpm).debit(tokens)

    def spent(self, name: str) -> int:
        return self._spent_map().get(name, 0)

    def _spent_map(self) -> dict[str, int]:
        if self._spent is None:
            self._spent = dict(self._load_spent())
        return self._spent

    def _bucket(self, buckets: dict[str, TokenBucket], name: str, per_minute: int) -> TokenBucket:
        bucket = buckets.get(name)
        if bucket is None or bucket.per_minute != per_minute:
            bucket = buckets[name] = TokenBucket(per_minute, self._clock)
        return bucket
