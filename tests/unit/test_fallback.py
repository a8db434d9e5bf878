"""The fallback chain over HTTP, in process, with fake engines that fail on purpose."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from inferrelay.config.schema import ModelSpec, Settings
from inferrelay.engines.base import Capability, LoadedModel, Sampling, TextModel
from inferrelay.engines.registry import EngineRegistry
from inferrelay.errors import ErrorKind, InferrelayError
from inferrelay.server.app import create_app
from tests.unit.conftest import EMBED, CrashingFake, MakeClient, NamedFake, UnavailableFake, assert_error, spec

HI = {"messages": [{"role": "user", "content": "hello there"}]}


def ask(client: Any, model: str = "m", **extra: Any) -> Any:
    return client.post("/v1/chat/completions", json={"model": model, **HI, **extra})


def engines_status(client: Any) -> dict[str, dict[str, Any]]:
    response = client.get("/api/v1/engines")
    assert response.status_code == 200
    return {row["name"]: row for row in response.json()["engines"]}


@pytest.fixture
def fakes() -> dict[str, NamedFake]:
    return {"flaky": NamedFake("flaky"), "fake": NamedFake("fake")}


def test_second_engine_answers_when_the_first_fails(make_client: MakeClient, fakes: dict[str, NamedFake]) -> None:
    client = make_client([spec("m", ["flaky", "fake"], flaky={"fail_kind": "transient"})], fakes)
    response = ask(client)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "echo: hello there"
    assert response.headers["x-inferrelay-backend"] == "local/fake"
    assert response.headers["x-inferrelay-attempts"] == "local/flaky=transient"

    status = engines_status(client)
    failure = status["flaky"]["last_failure"]
    assert failure["kind"] == "transient"
    assert "injected transient" in failure["reason"]
    assert failure["model"] == "m"
    assert status["fake"]["last_failure"] is None
    assert status["flaky"]["available"] is True

    single = client.get("/api/v1/engines/flaky")
    assert single.status_code == 200
    assert single.json()["last_failure"]["kind"] == "transient"


def test_healthy_first_engine_has_no_attempts(make_client: MakeClient, fakes: dict[str, NamedFake]) -> None:
    client = make_client([spec("m", ["fake", "flaky"])], fakes)
    response = ask(client)
    assert response.status_code == 200
    assert response.headers["x-inferrelay-backend"] == "local/fake"
    assert response.headers["x-inferrelay-attempts"] == ""
    assert fakes["flaky"].loads == 0


def test_load_failure_falls_back(make_client: MakeClient, fakes: dict[str, NamedFake]) -> None:
    options = {"fail_kind": "out_of_memory", "fail_on": "load"}
    client = make_client([spec("m", ["flaky", "fake"], flaky=options)], fakes)
    response = ask(client)
    assert response.status_code == 200
    assert response.headers["x-inferrelay-attempts"] == "local/flaky=out_of_memory"
    assert engines_status(client)["flaky"]["last_failure"]["kind"] == "out_of_memory"


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (RuntimeError("unexpected tensor layout"), "model_load_failed"),
        (RuntimeError("CUDA out of memory. Tried to allocate 1 GiB"), "out_of_memory"),
        (ModuleNotFoundError("No module named 'onnxruntime'", name="onnxruntime"), "dependency_missing"),
    ],
)
def test_foreign_load_exceptions_are_classified(make_client: MakeClient, exc: Exception, kind: str) -> None:
    engines = {"crashy": CrashingFake("crashy", exc), "fake": NamedFake("fake")}
    client = make_client([spec("m", ["crashy", "fake"])], engines)
    response = ask(client)
    assert response.status_code == 200
    assert response.headers["x-inferrelay-attempts"] == f"local/crashy={kind}"


def test_fallback_off_answers_with_the_first_failure(make_client: MakeClient, fakes: dict[str, NamedFake]) -> None:
    client = make_client([spec("m", ["flaky", "fake"], flaky={"fail_kind": "transient"})], fakes, fallback=False)
    response = ask(client)
    error = assert_error(response, 503, "transient")
    assert "injected transient" in error["message"]
    assert response.headers["x-inferrelay-attempts"] == "local/flaky=transient"
    assert fakes["fake"].loads == 0
    assert engines_status(client)["flaky"]["last_failure"]["kind"] == "transient"


def test_fallback_off_keeps_the_kinds_status(make_client: MakeClient, fakes: dict[str, NamedFake]) -> None:
    client = make_client([spec("m", ["flaky", "fake"], flaky={"fail_kind": "timeout"})], fakes, fallback=False)
    assert_error(ask(client), 504, "timeout")


def test_all_engines_failing_lists_each(make_client: MakeClient) -> None:
    engines = {"flaky": NamedFake("flaky"), "flaky2": NamedFake("flaky2")}
    model = spec(
        "m",
        ["flaky", "flaky2", "nope"],
        flaky={"fail_kind": "transient"},
        flaky2={"fail_kind": "out_of_memory", "fail_on": "load"},
    )
    client = make_client([model], engines)
    response = ask(client)
    error = assert_error(response, 503, "all_backends_failed")
    for part in ("local/flaky: transient", "local/flaky2: out_of_memory", "local/nope: engine_unavailable", "'m'"):
        assert part in error["message"]
    assert response.headers["x-inferrelay-attempts"] == (
        "local/flaky=transient,local/flaky2=out_of_memory,local/nope=engine_unavailable"
    )


@pytest.mark.parametrize(
    ("kind", "code"), [("bad_request", "bad_request"), ("context_length", "context_length_exceeded")]
)
def test_caller_errors_from_an_engine_do_not_fall_back(
    make_client: MakeClient, fakes: dict[str, NamedFake], kind: str, code: str
) -> None:
    client = make_client([spec("m", ["flaky", "fake"], flaky={"fail_kind": kind})], fakes)
    response = ask(client)
    assert_error(response, 400, code)
    assert fakes["fake"].loads == 0
    assert "x-inferrelay-attempts" not in response.headers
    assert engines_status(client)["flaky"]["last_failure"] is None


def test_real_context_overflow_is_400_without_fallback(make_client: MakeClient) -> None:
    engines = {"fake": NamedFake("fake"), "fake2": NamedFake("fake2")}
    client = make_client([spec("m", ["fake", "fake2"], context_length=4)], engines)
    long = {"messages": [{"role": "user", "content": "one two three four five"}]}
    assert_error(
        client.post("/v1/chat/completions", json={"model": "m", **long}), 400, "context_length_exceeded", "messages"
    )
    response = ask(client, max_tokens=3)  # 2 prompt words + 3 > 4
    assert_error(response, 400, "context_length_exceeded", "max_tokens")
    assert engines["fake2"].loads == 0


def test_context_overflow_in_a_stream_is_a_plain_400(make_client: MakeClient) -> None:
    client = make_client([spec("m", ["fake"], context_length=2)])
    response = ask(client, stream=True)
    assert_error(response, 400, "context_length_exceeded", "messages")


def test_unknown_engine_is_skipped_as_unavailable(make_client: MakeClient) -> None:
    client = make_client([spec("m", ["nope", "fake"])])
    response = ask(client)
    assert response.status_code == 200
    assert response.headers["x-inferrelay-backend"] == "local/fake"
    assert response.headers["x-inferrelay-attempts"] == "local/nope=engine_unavailable"
    assert "nope" not in engines_status(client)


def test_probe_failure_carries_its_kind(make_client: MakeClient) -> None:
    missing = InferrelayError(ErrorKind.DEPENDENCY_MISSING, "onnxruntime is not installed", hint="pip install x")
    engines = {"gone": UnavailableFake("gone", "onnxruntime is not installed", missing), "fake": NamedFake("fake")}
    client = make_client([spec("m", ["gone", "fake"])], engines)
    response = ask(client)
    assert response.status_code == 200
    assert response.headers["x-inferrelay-attempts"] == "local/gone=dependency_missing"
    assert engines["gone"].loads == 0
    row = engines_status(client)["gone"]
    assert row["available"] is False
    assert row["error"] == "onnxruntime is not installed"
    assert row["last_failure"]["kind"] == "dependency_missing"


def test_probe_failure_without_error_is_engine_unavailable(make_client: MakeClient) -> None:
    engines = {"gone": UnavailableFake("gone", "no GPU here"), "fake": NamedFake("fake")}
    client = make_client([spec("m", ["gone", "fake"])], engines, fallback=False)
    error = assert_error(ask(client), 503, "engine_unavailable")
    assert "no GPU here" in error["message"]


def test_broken_plugin_is_unavailable(make_client: MakeClient) -> None:
    engines: dict[str, Any] = {"broken": ImportError("cannot import name 'Llama'"), "fake": NamedFake("fake")}
    client = make_client([spec("m", ["broken", "fake"])], engines)
    response = ask(client)
    assert response.status_code == 200
    assert response.headers["x-inferrelay-attempts"] == "local/broken=engine_unavailable"
    row = engines_status(client)["broken"]
    assert row["available"] is False
    assert "engine plugin failed to load" in row["error"]
    assert row["capabilities"] == []


def test_engine_without_the_capability_is_skipped(make_client: MakeClient) -> None:
    class ChatOnlyFake(NamedFake):
        capabilities = frozenset({Capability.CHAT})

    engines = {"chatonly": ChatOnlyFake("chatonly"), "fake": NamedFake("fake")}
    client = make_client([spec("e", ["chatonly", "fake"], EMBED)], engines)
    response = client.post("/v1/embeddings", json={"model": "e", "input": "hi"})
    assert response.status_code == 200
    assert response.headers["x-inferrelay-attempts"] == "local/chatonly=engine_unavailable"
    assert engines["chatonly"].loads == 0


def test_embeddings_fall_back(make_client: MakeClient, fakes: dict[str, NamedFake]) -> None:
    client = make_client([spec("e", ["flaky", "fake"], EMBED, flaky={"fail_kind": "out_of_memory"})], fakes)
    response = client.post("/v1/embeddings", json={"model": "e", "input": ["a", "b"]})
    assert response.status_code == 200
    assert len(response.json()["data"]) == 2
    assert response.headers["x-inferrelay-backend"] == "local/fake"
    assert response.headers["x-inferrelay-attempts"] == "local/flaky=out_of_memory"


def test_stream_falls_back_before_the_first_token(make_client: MakeClient, fakes: dict[str, NamedFake]) -> None:
    client = make_client([spec("m", ["flaky", "fake"], flaky={"fail_kind": "transient"})], fakes)
    response = ask(client, stream=True)
    assert response.status_code == 200
    assert response.headers["x-inferrelay-backend"] == "local/fake"
    assert response.headers["x-inferrelay-attempts"] == "local/flaky=transient"
    assert response.text.rstrip().endswith("data: [DONE]")
    assert "echo:" in response.text


def test_failed_load_is_remembered(make_client: MakeClient, fakes: dict[str, NamedFake]) -> None:
    options = {"fail_kind": "model_load_failed", "fail_on": "load"}
    client = make_client([spec("m", ["flaky", "fake"], flaky=options)], fakes)
    for _ in range(3):
        assert ask(client).headers["x-inferrelay-attempts"] == "local/flaky=model_load_failed"
    assert fakes["flaky"].loads == 1
    assert fakes["fake"].loads == 1  # loaded once, then kept


def test_failed_load_is_retried_after_the_delay(make_client: MakeClient, fakes: dict[str, NamedFake]) -> None:
    options = {"fail_kind": "model_load_failed", "fail_on": "load"}
    client = make_client([spec("m", ["flaky", "fake"], flaky=options)], fakes, load_retry_after_s=0)
    ask(client)
    ask(client)
    assert fakes["flaky"].loads == 2


def test_engine_status_of_unknown_name_is_404(client: Any) -> None:
    error = assert_error(client.get("/api/v1/engines/nope"), 404, "not_found")
    assert "fake" in error["message"]


def test_caller_error_after_a_failed_attempt_keeps_the_attempts(
    make_client: MakeClient, fakes: dict[str, NamedFake]
) -> None:
    client = make_client([spec("m", ["flaky", "fake"], context_length=4, flaky={"fail_kind": "transient"})], fakes)
    response = ask(client, max_tokens=4)  # fits nowhere: 2 prompt words + 4 > 4
    assert_error(response, 400, "context_length_exceeded", "max_tokens")
    assert response.headers["x-inferrelay-attempts"] == "local/flaky=transient"


class BreaksMidStream(NamedFake):
    """Loads a fake decoder that yields two tokens and then raises a foreign exception."""

    def load(self, model: ModelSpec, device: str, home: Path) -> LoadedModel:
        loaded = super().load(model, device, home)
        assert isinstance(loaded, TextModel)
        original = loaded.generate_ids

        def generate_ids(ids: list[int], max_new: int, sampling: Sampling) -> Iterator[int]:
            tokens = original(ids, max_new, sampling)
            yield next(tokens)
            yield next(tokens)
            raise RuntimeError("device lost")

        loaded.generate_ids = generate_ids  # type: ignore[method-assign]
        return loaded


def test_stream_failing_after_its_first_token_ends_in_band(make_client: MakeClient) -> None:
    engines = {"broken": BreaksMidStream("broken"), "fake": NamedFake("fake")}
    client = make_client([spec("m", ["broken", "fake"])], engines)
    response = ask(client, stream=True)
    assert response.status_code == 200
    assert response.headers["x-inferrelay-backend"] == "local/broken"
    blocks = [b.removeprefix("data: ") for b in response.text.split("\n\n") if b.strip()]
    assert blocks[-1] == "[DONE]"
    error = json.loads(blocks[-2])["error"]
    assert error["code"] == "internal"
    assert "device lost" in error["message"]
    chunks = [json.loads(b) for b in blocks[:-2]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == "echo: hello"
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks)
    assert engines["fake"].loads == 0


class SlowLoadFake(NamedFake):
    def load(self, model: ModelSpec, device: str, home: Path) -> LoadedModel:
        time.sleep(0.2)
        return super().load(model, device, home)


def test_concurrent_first_requests_load_the_model_once(tmp_path: Path) -> None:
    engine = SlowLoadFake("fake")
    settings = Settings(models=[spec("m", ["fake"])], home=tmp_path)
    app = create_app(settings, EngineRegistry({"fake": engine}))

    async def main() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            body = {"model": "m", **HI}
            return await asyncio.gather(*(http.post("/v1/chat/completions", json=body) for _ in range(4)))

    responses = asyncio.run(main())
    assert [r.status_code for r in responses] == [200] * 4
    assert all(r.json()["choices"][0]["message"]["content"] == "echo: hello there" for r in responses)
    assert engine.loads == 1
    app.state.relay.pool.close()


def test_when_every_engine_is_cooling_down_the_least_recently_failed_is_tried(
    make_client: MakeClient, fakes: dict[str, NamedFake]
) -> None:
    failing = {"fail_kind": "model_load_failed", "fail_on": "load"}
    client = make_client([spec("m", ["flaky", "fake"], flaky=failing, fake=failing)], fakes)
    first = ask(client)
    assert_error(first, 503, "all_backends_failed")
    assert (fakes["flaky"].loads, fakes["fake"].loads) == (1, 1)
    second = ask(client)  # both remembered as failed: the one that failed first is tried again for real
    assert_error(second, 503, "all_backends_failed")
    assert (fakes["flaky"].loads, fakes["fake"].loads) == (2, 1)
    assert "(remembered)" in second.json()["error"]["message"]


def test_missing_library_at_load_marks_the_engine_unavailable(
    make_client: MakeClient, fakes: dict[str, NamedFake]
) -> None:
    options = {"fail_kind": "dependency_missing", "fail_on": "load"}
    client = make_client([spec("m", ["flaky", "fake"], flaky=options)], fakes)
    assert ask(client).headers["x-inferrelay-backend"] == "local/fake"
    status = engines_status(client)["flaky"]
    assert status["available"] is False
    assert "injected dependency_missing" in status["error"]
    refreshed = {row["name"]: row for row in client.get("/api/v1/engines?refresh=true").json()["engines"]}
    assert refreshed["flaky"]["available"] is True, "a fresh probe finds the (fake) library again"


def test_embedding_context_error_names_the_callers_index(client: Any) -> None:
    texts = ["a few short words here", "x", "y", " ".join(["word"] * 40)]
    response = client.post("/v1/embeddings", json={"model": "emb", "input": texts, "truncate": False})
    error = assert_error(response, 400, "context_length_exceeded", "input")
    assert error["message"].startswith("input[3] has 40 tokens")
