"""Which state a server keeps: in Redis when `runtime.state` or INFERRELAY_REDIS_URL names one, else in process."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from inferrelay.state.base import SharedState
from inferrelay.state.local import LocalState

REDIS_URL_ENV = "INFERRELAY_REDIS_URL"


def open_state(url: str | None, on_failure: Literal["open", "closed"], environ: Mapping[str, str]) -> SharedState:
    url = url or environ.get(REDIS_URL_ENV) or None
    if url is None:
        return LocalState()
    from inferrelay.state.failover import FailoverState
    from inferrelay.state.redis_store import RedisState

    return FailoverState(RedisState(url), on_failure)
