"""Traces with the SDK's in-memory exporter: the tree of a request that fell back once, and nothing when off."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from inferrelay.config.embedded import SMOLLM2
from inferrelay.config.loading import load_settings
from inferrelay.observe import tracing
from inferrelay.server.app import create_app
from tests.conftest import FRANCE
from tests.e2e.test_observability import config

pytestmark = pytest.mark.slow


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    tracing.configure(memory)
    yield memory
    tracing.reset()


def test_a_request_that_fell_back_once(exporter: InMemorySpanExporter, tmp_path: Path, test_home: Path) -> None:
    settings = load_settings(config(tmp_path), test_home)
    with TestClient(create_app(settings)) as client:
        body = {"model": "dead-then-local", "messages": FRANCE, "max_tokens": 8, "temperature": 0}
        response = client.post("/v1/chat/completions", json=body, headers={"x-request-id": "trace-me"})
    assert response.status_code == 200
    spans = {span.name: span for span in exporter.get_finished_spans()}
    request = spans["chat dead-then-local"]
    assert request.parent is None
    assert request.attributes["inferrelay.request_id"] == "trace-me"
    assert request.attributes["inferrelay.backend"] == "local/llamacpp"
    assert request.attributes["gen_ai.usage.output_tokens"] > 0
    attempts = sorted(
        (s for s in exporter.get_finished_spans() if s.name == "attempt"), key=lambda s: s.start_time or 0
    )
    assert [a.attributes["inferrelay.backend"] for a in attempts] == ["dead", "local/llamacpp"]
    assert all(a.parent is not None and a.parent.span_id == request.context.span_id for a in attempts)
    assert attempts[0].status.status_code is StatusCode.ERROR
    assert attempts[1].status.status_code is not StatusCode.ERROR
    load = spans["model.load"]
    assert load.parent is not None
    assert load.parent.span_id == attempts[1].context.span_id
    assert load.attributes["inferrelay.model"] == SMOLLM2.name
    assert load.attributes["inferrelay.engine"] == "llamacpp"


def test_off_by_default_with_no_spans_and_no_traceparent(tmp_path: Path, test_home: Path) -> None:
    assert not tracing.wanted()
    assert not tracing.enabled()
    with tracing.span("nothing") as span:
        assert span is None
    assert tracing.inject({}) == {}
