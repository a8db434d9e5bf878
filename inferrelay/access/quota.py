"""What a key may still spend: requests and tokens per minute, and its token budget.

rpm and tpm are token buckets that refill continuously (a minute's allowance at most), like the providers'
limits (routing/ratelimit.py): a key with rpm 5 gets five requests at once and one more every 12 s. A request is
admitted when its key has a request and a token left (the tokens of an answer are taken when it is done, so a
key may overshoot its tpm by one request, as OpenAI's limits do). The budget counts every token the key's
answers reported; at start it is read back from the request log, so a restart forgets nothing the log keeps.
Without a shared state this is one server's own; with Redis (`runtime.state`) every server draws from the same
buckets and one spent count per key, and this process's own counts answer while Redis does not (docs/keys.md).
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable

from inferrelay.access.keys import Key
from inferrelay.errors import ErrorKind, InferrelayError
from inferrelay.state.base import KeyLimits, KeyVerdict, SharedState, StateUnavailable
from inferrelay.token_bucket import TokenBucket

WHAT = {"rpm": "requests per minute", "tpm": "tokens per minute"}


class KeyQuota:
    def __init__(
        self,
        spent: Callable[[], dict[str, int]],
        clock: Callable[[], float] = time.monotonic,
        state: SharedState | None = None,
    ) -> None:
        self._clock = clock
        self._load_spent = spent
        self._spent: dict[str, int] | None = None  # read from the request log on first use
        self._requests: dict[str, TokenBucket] = {}
        self._tokens: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()
        self._state = state if state is not None and state.status().get("shared") is True else None
        self.shared = self._state is not None
        """Whether the keys' allowances are shared with other servers: admission is then `admit_shared`."""
        self._spending: dict[str, set[asyncio.Task[None]]] = {}  # key name -> its answers' counts on their way

    def admit(self, key: Key) -> None:
        """Take one request from the key's allowance in process, or raise the 429 that says what ran out."""
        with self._lock:
            refusal = self._refusal(key)
        if refusal is not None:
            raise refused(key, refusal)

    async def admit_shared(self, key: Key) -> None:
        """`admit` against the allowance every server shares; this process's own while the state does not answer
        (fail open), or a 429 (fail closed)."""
        assert self._state is not None
        try:
            verdict = await self._state.admit_key(limits(key), self.spent(key.name), lambda: self._local_verdict(key))
        except StateUnavailable as exc:
            raise InferrelayError(
                ErrorKind.RATE_LIMITED,
                f"key {key.name!r}: {exc}",
                code="rate_limit_exceeded",
                retry_after=exc.retry_after,
                hint="Retry shortly; the server refuses keyed requests while it cannot count them.",
            ) from None
        self._learn(key.name, verdict.spent)
        if verdict.limit is not None:
            raise refused(key, verdict)

    def spend(self, key: Key, tokens: int) -> None:
        """An answer of the key's is done: it used `tokens`. With a shared state the count leaves for it in a task
        (`settled` awaits it)."""
        if tokens <= 0:
            return
        with self._lock:
            spent = self._spent_map()
            seed = spent.get(key.name, 0)  # what a missing shared count starts from: not these tokens yet
            spent[key.name] = seed + tokens
            if key.tpm is not None:
                self._bucket(self._tokens, key.name, key.tpm).debit(tokens)
        if self._state is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no server around: this process's count is all there is
            return
        task = loop.create_task(self._spend_shared(self._state, key, tokens, seed))
        pending = self._spending.setdefault(key.name, set())
        pending.add(task)
        task.add_done_callback(pending.discard)

    async def settled(self, name: str) -> None:
        """Once the counts of the key's answers done so far are in the shared state: an answer leaves after its
        tokens count, so the next request, at any server, sees them."""
        pending = self._spending.get(name)
        if pending:
            await asyncio.wait(list(pending))

    def spent(self, name: str) -> int:
        """The key's tokens as this process knows them: its request log, its answers, and the shared count last
        seen."""
        return self._spent_map().get(name, 0)

    async def spent_shared(self, name: str) -> int:
        """The key's tokens as every server sharing the state counts them (this process's own without one)."""
        if self._state is None:
            return self.spent(name)
        total = await self._state.key_spent(name, self.spent(name), lambda: self.spent(name))
        self._learn(name, total)
        return self.spent(name)

    async def _spend_shared(self, state: SharedState, key: Key, tokens: int, seed: int) -> None:
        total = await state.spend_key(limits(key), tokens, seed, lambda: self.spent(key.name))
        self._learn(key.name, total)

    def _learn(self, name: str, total: int) -> None:
        """The shared count seen: what this process falls back on if the state stops answering."""
        with self._lock:
            spent = self._spent_map()
            if total > spent.get(name, 0):
                spent[name] = total

    def _local_verdict(self, key: Key) -> KeyVerdict:
        with self._lock:
            refusal = self._refusal(key)
        return refusal or KeyVerdict(self.spent(key.name))

    def _refusal(self, key: Key) -> KeyVerdict | None:
        """What refuses the key's request in process; None: admitted, and one request taken. Under the lock."""
        if key.budget_tokens is not None and (spent := self.spent(key.name)) >= key.budget_tokens:
            return KeyVerdict(spent, "budget")
        wait, limit = 0.0, None
        if key.tpm is not None:
            wait, limit = self._bucket(self._tokens, key.name, key.tpm).wait_for(1), "tpm"
        if key.rpm is not None:
            rpm_wait = self._bucket(self._requests, key.name, key.rpm).wait_for(1)
            if rpm_wait > wait or limit is None:
                wait, limit = rpm_wait, "rpm"
        if wait > 0:
            return KeyVerdict(self.spent(key.name), limit, wait)
        if key.rpm is not None:
            self._requests[key.name].take(1)
        return None

    def _spent_map(self) -> dict[str, int]:
        if self._spent is None:
            self._spent = dict(self._load_spent())
        return self._spent

    def _bucket(self, buckets: dict[str, TokenBucket], name: str, per_minute: int) -> TokenBucket:
        bucket = buckets.get(name)
        if bucket is None or bucket.per_minute != per_minute:
            bucket = buckets[name] = TokenBucket(per_minute, self._clock)
        return bucket


def limits(key: Key) -> KeyLimits:
    return KeyLimits(key.name, key.rpm, key.tpm, key.budget_tokens)


def refused(key: Key, verdict: KeyVerdict) -> InferrelayError:
    """The 429 that says what ran out."""
    if verdict.limit == "budget":
        return InferrelayError(
            ErrorKind.RATE_LIMITED,
            f"key {key.name!r} has spent its budget of {key.budget_tokens} tokens",
            code="budget_exhausted",
            hint="Ask an operator for a new key or a larger budget; it does not refill.",
        )
    allowed = key.rpm if verdict.limit == "rpm" else key.tpm
    return InferrelayError(
        ErrorKind.RATE_LIMITED,
        f"key {key.name!r} is past its limit of {allowed} {WHAT.get(verdict.limit or '', verdict.limit)}; "
        f"retry in {math.ceil(verdict.wait)} s",
        code="rate_limit_exceeded",
        retry_after=verdict.wait,
        hint="Slow down, or ask an operator for a key with a higher limit.",
    )
