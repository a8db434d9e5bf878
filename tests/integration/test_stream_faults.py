"""A stream that fails after its first token ends with an error event; before it, it falls back."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi.testclient import TestClient

from inferrelay.config.schema import ModelSpec, Settings
from inferrelay.engines.base import Capability
from inferrelay.engines.fake import FakeEngine
from inferrelay.engines.registry import EngineRegistry
from inferrelay.server.app import create_app


class SecondFake(FakeEngine):
    """A second, healthy engine for the chain (the fake reads its options under 'fake')."""

    name = "second"

    def load(self, model, device, home):  # type: ignore[no-untyped-def]
        return super().load(model.model_copy(update={"engine_options": {}}), device, home)


def client_for(fail_on: str, tmp_path: Path) -> TestClient:
    spec = ModelSpec(
        name="m",
        source="fake",
        capabilities=[Capability.CHAT],
        engines=["fake", "second"],
        engine_options={"fake": {"fail_kind": "transient", "fail_on": fail_on}},
    )
    registry = EngineRegistry({"fake": FakeEngine(), "second": SecondFake()})
    return TestClient(create_app(Settings(models=[spec], home=tmp_path), registry))


def events(client: TestClient) -> tuple[dict[str, str], list[str]]:
    body = {"model": "m", "messages": [{"role": "user", "content": "alpha beta gamma"}], "stream": True}
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        lines = [line.removeprefix("data: ") for line in response.iter_lines() if line]
        return dict(response.headers), lines


def test_failure_after_first_token_ends_with_an_error_event(tmp_path: Path) -> None:
    with client_for("stream", tmp_path) as client:
        headers, lines = events(client)
    assert headers["x-inferrelay-backend"] == "local/fake"
    assert lines[-1] == "[DONE]"
    error = json.loads(lines[-2])["error"]
    assert error["code"] == "transient"
    text = "".join(json.loads(x)["choices"][0]["delta"].get("content", "") for x in lines[:-2])
    assert text == "echo:", "the token sent before the failure stays sent"


def test_failure_before_first_token_falls_back_transparently(tmp_path: Path) -> None:
    with client_for("request", tmp_path) as client:
        headers, lines = events(client)
    assert headers["x-inferrelay-backend"] == "local/second"
    assert headers["x-inferrelay-attempts"] == "local/fake=transient"
    assert lines[-1] == "[DONE]"
    text = "".join(json.loads(x)["choices"][0]["delta"].get("content", "") for x in lines[:-1])
    assert text == "echo: alpha beta gamma"
