"""The walk across steps: local models (each with its engine chain) and remote providers.

A remote step is retried on transient errors with backoff, and skipped while
its circuit is open (routing/cooldown.py); when every step was skipped for
cooling down, the least recently failed one is still tried.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar, runtime_checkable

from inferrelay.config.providers import LOCAL, RemoteProvider
from inferrelay.config.schema import ModelSpec, Settings
from inferrelay.engines.base import utcnow
from inferrelay.errors import ErrorKind, InferrelayError, classify
from inferrelay.observe import tracing
from inferrelay.outcome import Attempt, ChainFailed, Served, chain_failure
from inferrelay.providers.remote import RemoteClient
from inferrelay.routing.cooldown import CooldownTracker
from inferrelay.routing.fallback import remedied
from inferrelay.routing.needs import NOTHING, Needs
from inferrelay.routing.ratelimit import RateLimiter
from inferrelay.routing.resolve import Step
from inferrelay.routing.stats import DeploymentBook
from inferrelay.runtime.catalog import ModelCatalog
from inferrelay.runtime.slots import OVERLOADED_RETRY_AFTER_S
from inferrelay.state.base import ProviderView, SharedState, StateUnavailable
from inferrelay.state.local import LocalState

T = TypeVar("T")

RETRIED_KINDS = frozenset({ErrorKind.TRANSIENT, ErrorKind.TIMEOUT, ErrorKind.RATE_LIMITED})
MAX_BACKOFF_S = 5.0
IN_FLIGHT_EVERY_S = 0.25
HOLDING_SKIPS = frozenset({ErrorKind.RATE_LIMITED, ErrorKind.OVERLOADED, ErrorKind.UNSUPPORTED})
"""Skips that hold even as a last resort: trying the step anyway would break its limit or its refusal."""

LocalAction = Callable[[ModelSpec], Awaitable[Served[T]]]
RemoteAction = Callable[[RemoteClient, str], Awaitable[T]]


@runtime_checkable
class Lasting(Protocol):
    """An answer that outlives the call that opened it (a stream): it counts as in flight until it closes."""

    def on_close(self, callback: Callable[[], None]) -> None: ...


class StepRouter:
    def __init__(
        self,
        settings: Settings,
        cooldowns: CooldownTracker | None = None,
        book: DeploymentBook | None = None,
        clock: Callable[[], float] | None = None,
        catalog: ModelCatalog | None = None,
        state: SharedState | None = None,
    ) -> None:
        self._settings = settings
        self._catalog = catalog or ModelCatalog(settings.models)
        self.cooldowns = cooldowns or CooldownTracker()
        self.book = book or DeploymentBook()
        remote = {name: c for name, c in settings.providers.items() if isinstance(c, RemoteProvider)}
        self.clients = {name: RemoteClient(name, config) for name, config in remote.items()}
        self.state = state or LocalState(clock or time.monotonic)  # in process, or shared in Redis
        self.limits = RateLimiter(remote, self.state)

    async def serve(
        self,
        requested: str,
        steps: list[Step],
        local: LocalAction[T],
        remote: RemoteAction[T],
        estimate: Callable[[], int] = lambda: 0,
        needs: Needs = NOTHING,
    ) -> Served[T]:
        """Walk `steps`; `estimate` gives the request's size in tokens, asked only where a tpm limit applies;
        a remote step whose configuration refuses one of `needs` is skipped as `unsupported`.

        The remediation steps taken anywhere in the walk go with the answer, or with the failure.
        """
        return await remedied(self._walk(requested, steps, local, remote, estimate, needs))

    async def _walk(
        self,
        requested: str,
        steps: list[Step],
        local: LocalAction[T],
        remote: RemoteAction[T],
        estimate: Callable[[], int],
        needs: Needs,
    ) -> Served[T]:
        attempts: list[Attempt] = []
        skipped: list[Step] = []
        for step in steps:
            skip = self._refused(step, needs) or await self._passed_over(step, estimate)
            if skip is not None:
                outcome: Served[T] | InferrelayError = skip
                attempts.append(Attempt.of(step.provider, skip))
                if skip.kind not in HOLDING_SKIPS:
                    skipped.append(step)
            else:
                outcome = await self._try(step, local, remote, attempts)
            if isinstance(outcome, Served):
                return outcome
            if not self._settings.fallback:
                raise ChainFailed(outcome, attempts)
        if skipped:  # everything cooling down or unhealthy: the least recently failed is still tried
            step = min(skipped, key=lambda s: self.cooldowns.last_failure_at(s.provider))
            outcome = await self._try(step, local, remote, attempts)
            if isinstance(outcome, Served):
                return outcome
        raise ChainFailed(chain_failure(f"model {requested!r}", "backend", attempts), attempts)

    def _refused(self, step: Step, needs: Needs) -> InferrelayError | None:
        if step.provider == LOCAL:
            return None
        return needs.remote_gap(step.provider, self.clients[step.provider].config.refuse_fields)

    async def _passed_over(self, step: Step, estimate: Callable[[], int]) -> InferrelayError | None:
        """Why a remote step is skipped now, or past its rate limits. What is shared is asked in one round trip
        that draws from the rate limits only for a step it does not skip; a shared state that does not answer
        with state_failure closed refuses the step as rate limited (docs/scaling.md)."""
        if step.provider == LOCAL:
            return None
        local = self._busy(step)
        if local is not None:
            return local
        tokens = estimate() if self.limits.counts_tokens(step.provider) else 0
        try:
            admission = await self.state.admit(step.provider, self.limits.draws(step.provider, tokens))
        except StateUnavailable as down:
            return InferrelayError(ErrorKind.RATE_LIMITED, str(down), retry_after=down.retry_after)
        return self._skip_reason(step, admission.view) or self._over_limit(step, admission.wait)

    def _busy(self, step: Step) -> InferrelayError | None:
        """This server's own reasons, asked first: `max_in_flight` requests already, or its circuit open (asked
        without spending the probe)."""
        stats = self.book[step.provider]
        limit = self.clients[step.provider].config.max_in_flight
        if limit is not None and stats.in_flight >= limit:
            message = f"provider {step.provider!r} has {stats.in_flight} requests in flight (max_in_flight {limit})"
            return InferrelayError(ErrorKind.OVERLOADED, message, retry_after=OVERLOADED_RETRY_AFTER_S)
        if self.cooldowns.refuses(step.provider):
            return InferrelayError(ErrorKind.COOLING_DOWN, f"provider {step.provider!r} is cooling down")
        return None

    def _skip_reason(self, step: Step, shared: ProviderView) -> InferrelayError | None:
        """Why every server passes the step over: it failed its last health check (here or anywhere sharing the
        state), or its cooldown was opened (here or anywhere)."""
        if not (self.book[step.provider].healthy if shared.healthy is None else shared.healthy):
            message = f"provider {step.provider!r} failed its last health check"
            return InferrelayError(ErrorKind.ENGINE_UNAVAILABLE, message)
        if shared.cooldown_left > 0:
            return InferrelayError(ErrorKind.COOLING_DOWN, f"provider {step.provider!r} is cooling down")
        return None

    def _over_limit(self, step: Step, wait: float) -> InferrelayError | None:
        """Past its rpm/tpm limits; else the request goes, as the circuit's probe where it is half open."""
        if wait > 0:
            message = f"provider {step.provider!r} is at its rpm/tpm limit for {wait:.1f}s more"
            return InferrelayError(ErrorKind.RATE_LIMITED, message, retry_after=wait)
        if not self.cooldowns.admit(step.provider):  # another request took the probe meanwhile
            return InferrelayError(ErrorKind.COOLING_DOWN, f"provider {step.provider!r} is cooling down")
        return None

    async def check_health(self, name: str) -> bool:
        stats = self.book[name]
        stats.healthy, stats.health_checked_at = await self.clients[name].health(), utcnow()
        interval = self.clients[name].config.health_interval_s
        await self.state.set_healthy(name, stats.healthy, ttl_s=max(3 * interval, 10.0))  # one missed check is ok
        return stats.healthy

    async def share_in_flight(self, every_s: float = IN_FLIGHT_EVERY_S) -> None:
        """With shared state, tell the others what is in flight here and learn theirs, until cancelled: least_busy
        then weighs every server's requests (as of the last exchange, at most `every_s` old)."""
        if not self.state.status().get("shared"):
            return
        while True:
            mine = {name: self.book[name].in_flight for name in self.clients}
            totals = await self.state.share_in_flight(mine)
            for name, total in totals.items():
                self.book[name].elsewhere = max(0, total - mine[name])
            await asyncio.sleep(every_s)

    async def watch_health(self) -> None:
        """Check each remote provider at its own interval, until cancelled."""

        async def watch(name: str, interval: float) -> None:
            while True:
                await self.check_health(name)
                await asyncio.sleep(interval)

        watchers = [
            watch(name, client.config.health_interval_s)
            for name, client in self.clients.items()
            if client.config.health_interval_s > 0
        ]
        await asyncio.gather(*watchers)

    async def status(self) -> list[dict[str, object]]:
        """GET /api/v1/providers: each remote provider's health, cooldown, in-flight count, latency, last error;
        health and cooldown as every server sharing the state sees them."""
        rows = []
        for name, client in self.clients.items():
            row: dict[str, object] = {"name": name, "type": client.config.type, "base_url": client.config.base_url}
            row |= self.book[name].as_dict()
            cooldown = self.cooldowns.status(name)
            try:
                shared = await self.state.view(name)
            except StateUnavailable:
                shared = None
            if shared is not None and shared.healthy is not None:
                row["healthy"] = shared.healthy
            if shared is not None and shared.cooldown_left > 0 and not self.cooldowns.cooling(name):
                cooldown |= {"state": "open", "cooldown_remaining_s": round(shared.cooldown_left, 3)}
            rows.append(row | {"cooldown": cooldown})
        return rows

    async def _try(
        self, step: Step, local: LocalAction[T], remote: RemoteAction[T], attempts: list[Attempt]
    ) -> Served[T] | InferrelayError:
        """One step: its answer, or the error it failed with (recorded in `attempts`)."""
        if step.provider == LOCAL:
            try:
                served = await self._local(step, local)
            except ChainFailed as failed:
                attempts += failed.attempts
                if not failed.kind.policy.falls_back and failed.kind is not ErrorKind.ALL_BACKENDS_FAILED:
                    raise ChainFailed(failed, attempts) from failed
                return failed
            except InferrelayError as error:
                if not error.kind.policy.falls_back:
                    raise ChainFailed(error, attempts) from error
                attempts.append(Attempt.of(step.provider, error))
                return error
            return Served(served.result, served.backend, [*attempts, *served.attempts])
        try:
            return Served(await self._remote(step, remote, attempts), step.provider, attempts)
        except InferrelayError as error:
            if not error.kind.policy.falls_back:
                raise ChainFailed(error, attempts) from error
            attempts.append(Attempt.of(step.provider, error))
            return error

    async def _local(self, step: Step, local: LocalAction[T]) -> Served[T]:
        spec = self._catalog.get(step.model)
        if spec is None:
            raise InferrelayError(ErrorKind.MODEL_NOT_FOUND, f"no local model {step.model!r}")
        return await local(spec)

    async def _remote(self, step: Step, remote: RemoteAction[T], attempts: list[Attempt]) -> T:
        client = self.clients[step.provider]
        config = client.config
        stats = self.book[step.provider]
        for attempt in range(config.max_retries + 1):
            started = stats.started()
            try:
                with tracing.span("attempt", **{"inferrelay.backend": step.provider, "inferrelay.model": step.model}):
                    result = await remote(client, step.model)
            except asyncio.CancelledError:  # its caller went away or its deadline passed: not the provider's doing
                stats.released()
                raise
            except Exception as exc:
                error = classify(exc)
                stats.finished(started, f"{error.kind.value}: {error.message}")
                if not error.kind.policy.falls_back:  # the caller's mistake: the provider itself is fine
                    self.cooldowns.succeeded(step.provider)
                    raise error from exc
                self.cooldowns.failed(step.provider, error.kind, config.cooldown_s)
                if self.cooldowns.cooling(step.provider):  # every server sharing the state skips it too
                    await self.state.cool(step.provider, config.cooldown_s)
                last_try = attempt == config.max_retries or self.cooldowns.cooling(step.provider)
                if error.kind not in RETRIED_KINDS or last_try:
                    raise error from exc
                attempts.append(Attempt.of(step.provider, error))
                await asyncio.sleep(min(error.retry_after or 0.1 * 2**attempt, MAX_BACKOFF_S))
            else:
                stats.answered(started)  # for a stream: its time to first event
                if isinstance(result, Lasting):
                    result.on_close(stats.released)
                else:
                    stats.released()
                self.cooldowns.succeeded(step.provider)
                return result
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def aclose(self) -> None:
        for client in self.clients.values():
            await client.aclose()
        await self.state.aclose()
