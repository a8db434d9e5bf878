"""The walk across steps: local models (each with its engine chain) and remote providers, with retries."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from inferrelay.config.providers import LOCAL, RemoteProvider
from inferrelay.config.schema import ModelSpec, Settings
from inferrelay.errors import ErrorKind, InferrelayError, classify
from inferrelay.providers.remote import RemoteClient
from inferrelay.routing.fallback import Attempt, ChainFailed, Served
from inferrelay.routing.resolve import Step

T = TypeVar("T")

RETRIED_KINDS = frozenset({ErrorKind.TRANSIENT, ErrorKind.TIMEOUT, ErrorKind.RATE_LIMITED})
MAX_BACKOFF_S = 5.0

LocalAction = Callable[[ModelSpec], Awaitable[Served[T]]]
RemoteAction = Callable[[RemoteClient, str], Awaitable[T]]


class StepRouter:
    """Tries each step in order; a remote step is retried on transient errors, with backoff."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.clients = {
            name: RemoteClient(name, config)
            for name, config in settings.providers.items()
            if isinstance(config, RemoteProvider)
        }

    async def serve(
        self, requested: str, steps: list[Step], local: LocalAction[T], remote: RemoteAction[T]
    ) -> Served[T]:
        attempts: list[Attempt] = []
        last: InferrelayError | None = None
        for step in steps:
            try:
                if step.provider == LOCAL:
                    served = await self._local(step, local)
                    return Served(served.result, served.backend, [*attempts, *served.attempts])
                return Served(await self._remote(step, remote, attempts), step.provider, attempts)
            except ChainFailed as failed:
                attempts += failed.attempts
                last = failed
                if not failed.kind.policy.falls_back and failed.kind is not ErrorKind.ALL_BACKENDS_FAILED:
                    raise ChainFailed(failed, attempts) from failed
            except InferrelayError as error:
                if not error.kind.policy.falls_back:
                    raise ChainFailed(error, attempts) from error
                attempts.append(Attempt(step.provider, error.kind, error.message, error.hint))
                last = error
            if not self._settings.fallback:
                assert last is not None
                raise ChainFailed(last, attempts)
        lines = "; ".join(a.describe() for a in attempts)
        failed_all = InferrelayError(
            ErrorKind.ALL_BACKENDS_FAILED, f"every backend for model {requested!r} failed: {lines}"
        )
        raise ChainFailed(failed_all, attempts)

    async def _local(self, step: Step, local: LocalAction[T]) -> Served[T]:
        spec = self._settings.model(step.model)
        if spec is None:
            raise InferrelayError(ErrorKind.MODEL_NOT_FOUND, f"no local model {step.model!r}")
        return await local(spec)

    async def _remote(self, step: Step, remote: RemoteAction[T], attempts: list[Attempt]) -> T:
        client = self.clients[step.provider]
        retries = client.config.max_retries
        for attempt in range(retries + 1):
            try:
                return await remote(client, step.model)
            except Exception as exc:
                error = classify(exc)
                if error.kind not in RETRIED_KINDS or attempt == retries:
                    raise error from exc
                attempts.append(Attempt(step.provider, error.kind, error.message, error.hint))
                await asyncio.sleep(min(error.retry_after or 0.1 * 2**attempt, MAX_BACKOFF_S))
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        for client in self.clients.values():
            await client.aclose()
