"""The `runtime.connections:` block: how long a client may take to send a request, and how many may be connected."""

from __future__ import annotations

from pydantic import Field

from inferrelay.config.strict import Strict
from inferrelay.config.units import Duration


class ConnectionLimits(Strict):
    header_timeout: Duration = Field(
        default=10.0,
        gt=0,
        description="a new connection must send a whole request line and headers within this time (counted from "
        "the connection, or from the first byte of a later request); else it is closed",
    )
    body_timeout: Duration = Field(
        default=60.0,
        gt=0,
        description="a request's whole body must arrive within this time of its headers; else 408 and the "
        "connection is closed",
    )
    keep_alive_timeout: Duration = Field(
        default=5.0, gt=0, description="an idle connection between two requests is closed after this time"
    )
    max_connections: int | None = Field(
        default=1024,
        ge=1,
        description="connections and running requests at once; past it a request is answered 503 at once "
        "(uvicorn's limit_concurrency); null: no limit but the file-descriptor limit",
    )
