"""The documented example configuration loads, and the fake model it declares answers."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from inferrelay.config.loading import load_settings
from inferrelay.server.app import create_app
from tests.conftest import REPO


def test_minimal_example_loads_and_overrides_only_what_it_names(tmp_path: Path) -> None:
    settings = load_settings(REPO / "examples" / "minimal", tmp_path)
    chat = settings.model("smollm2-135m-instruct")
    assert chat is not None
    assert chat.engines == ["torch", "llamacpp"]
    assert chat.source.endswith(".gguf"), "fields the example does not name keep their embedded value"
    assert settings.fallback is True


def test_example_fake_model_is_deterministic_and_fails_as_configured(tmp_path: Path) -> None:
    app = create_app(load_settings(REPO / "examples" / "minimal", tmp_path))
    body = {"model": "test-double", "messages": [{"role": "user", "content": "one two three"}]}
    with TestClient(app) as client:
        answers = [client.post("/v1/chat/completions", json=body) for _ in range(12)]
    ok = [a for a in answers if a.status_code == 200]
    failed = [a for a in answers if a.status_code != 200]
    assert ok, "most requests succeed"
    assert failed, "a third of requests fail by design"
    assert {a.json()["choices"][0]["message"]["content"] for a in ok} == {"echo: one two three"}
    assert {a.json()["error"]["code"] for a in failed} == {"all_backends_failed"}
