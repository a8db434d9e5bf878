"""OpenTelemetry traces: a span per request, a child per attempt (and per remediation step), one per model load.

Off unless the standard variables ask for it (OTEL_EXPORTER_OTLP_ENDPOINT or
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, or OTEL_TRACES_EXPORTER=otlp|console),
and OTEL_SDK_DISABLED=true turns it off. Off, `span` returns a shared no-op
context and nothing of OpenTelemetry is imported: no cost. On, spans go over
OTLP/HTTP in batches, and requests to remote providers carry `traceparent`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

_tracer: Any = None


def wanted() -> bool:
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    exporter = os.environ.get("OTEL_TRACES_EXPORTER", "").lower()
    if exporter == "none":
        return False
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    return bool(endpoint) or exporter in ("otlp", "console")


def configure(exporter: Any = None) -> bool:
    """Turn tracing on with `exporter` (tests pass an in-memory one), or as the OTEL_* variables say;
    without an exporter, tracing already on stays as it is."""
    global _tracer
    if exporter is None and (_tracer is not None or not wanted()):
        return _tracer is not None
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor

    provider = TracerProvider(
        resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "inferrelay")})
    )
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    elif os.environ.get("OTEL_TRACES_EXPORTER", "").lower() == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    _tracer = provider.get_tracer("inferrelay")
    return True


def reset() -> None:
    """Tracing off (tests)."""
    global _tracer
    _tracer = None


def enabled() -> bool:
    return _tracer is not None


@contextlib.contextmanager
def span(name: str, **attributes: Any) -> Iterator[Any]:
    """A child of the current span, current while the block runs; None when tracing is off."""
    if _tracer is None:
        yield None
        return
    with _tracer.start_as_current_span(name, attributes=_clean(attributes)) as current:
        yield current


def start(name: str, **attributes: Any) -> Any:
    """A span that outlives the block that starts it (a streamed request); `end` it later. None when off."""
    if _tracer is None:
        return None
    return _tracer.start_span(name, attributes=_clean(attributes))


@contextlib.contextmanager
def within(current: Any) -> Iterator[None]:
    """Make a span from `start` the current one while the block runs, without ending it."""
    if current is None:
        yield
        return
    from opentelemetry import trace

    with trace.use_span(current, end_on_exit=False):
        yield


def failed(current: Any, kind: str, message: str) -> None:
    if current is None:
        return
    from opentelemetry.trace import Status, StatusCode

    current.set_attribute("inferrelay.error_kind", kind)
    current.set_status(Status(StatusCode.ERROR, message[:200]))


def end(current: Any, **attributes: Any) -> None:
    if current is None:
        return
    current.set_attributes(_clean(attributes))
    current.end()


def inject(headers: dict[str, str]) -> dict[str, str]:
    """`traceparent` (W3C) for the current span, for a request to a remote provider."""
    if _tracer is not None:
        from opentelemetry.propagate import inject as otel_inject

        otel_inject(headers)
    return headers


def _clean(attributes: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in attributes.items() if v is not None}
