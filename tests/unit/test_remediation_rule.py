"""Who the out-of-memory ladder's steps are for: a request that runs out of memory fails alone, and the model
stays as configured for everyone; a load that does not fit is lowered, visibly, for that load only, and the
next load that fits is back at the configured precision."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from inferrelay.config.schema import ModelSpec
from inferrelay.engines.base import EmbeddingModel, Embeddings, LoadedModel
from inferrelay.engines.fake import FakeEngine
from inferrelay.errors import ErrorKind, InferrelayError
from tests.unit.conftest import MakeClient, assert_error, spec

HUGE = "HUGE"
"""A text the engine below runs out of memory on, however small its batch: one caller's input."""


class OutOfMemoryOn(EmbeddingModel):
    """The fake's encoder, out of memory on any batch holding HUGE."""

    engine_name = "tight"

    def __init__(self, inner: EmbeddingModel) -> None:
        self._inner = inner
        self.context_length = inner.context_length

    def embed(self, texts: list[str], truncate: bool = True) -> Embeddings:
        if HUGE in texts:
            raise InferrelayError(ErrorKind.OUT_OF_MEMORY, f"a batch of {len(texts)} did not fit")
        return self._inner.embed(texts, truncate)


class TightEngine(FakeEngine):
    """A fake with an int8 step below float32, whose loads fit only in the dtypes in `fits`."""

    name = "tight"
    precision_steps = (("encoder", "float32", "int8"),)

    def __init__(self) -> None:
        self.fits = {"float32", "int8"}
        self.loaded_dtypes: list[str] = []

    def load(self, model: ModelSpec, device: str, home: Path) -> LoadedModel:
        if model.dtype not in self.fits:
            raise InferrelayError(ErrorKind.OUT_OF_MEMORY, f"{model.dtype} does not fit in this test's memory")
        self.loaded_dtypes.append(model.dtype)
        inner = super().load(model, device, home)
        assert isinstance(inner, EmbeddingModel)
        return OutOfMemoryOn(inner)


def tight_client(make_client: MakeClient) -> tuple[TestClient, TightEngine]:
    engine = TightEngine()
    return make_client([spec("emb", ["tight"], ["embeddings"])], {"tight": engine}), engine


def embed(client: TestClient, texts: list[str]) -> Any:
    return client.post("/v1/embeddings", json={"model": "emb", "input": texts})


def loaded(client: TestClient) -> list[dict[str, Any]]:
    return list(client.get("/api/v1/runtime/models/emb").json()["loaded"])


def events(client: TestClient) -> list[str]:
    return [e["what"] for e in client.get("/api/v1/runtime/models/emb").json()["events"]]


def test_one_input_out_of_memory_in_a_batch_of_one_leaves_the_model_as_configured(make_client: MakeClient) -> None:
    client, engine = tight_client(make_client)
    before = embed(client, ["hello"])
    assert before.status_code == 200, before.text
    failed = embed(client, ["hello", HUGE])
    assert_error(failed, 503, "all_backends_failed")
    assert failed.headers["x-inferrelay-attempts"] == "local/tight=out_of_memory"
    steps = failed.headers["x-inferrelay-remediation"].split(";")
    assert steps[0] == "local/tight:smaller_batch(32 -> 16)"  # halved down to one input, and still out of memory
    assert not any("lower_precision" in step or ":cpu(" in step for step in steps)
    [slot] = loaded(client)
    assert (slot["dtype"], slot["remedied"], slot["configured"]) == ("float32", False, slot["configured"])
    assert slot["configured"] == {"device": slot["device"], "dtype": "float32"}
    assert "lower_precision" not in events(client)
    after = embed(client, ["hello"])
    assert after.status_code == 200, after.text
    assert "x-inferrelay-remediation" not in after.headers
    assert after.json()["data"] == before.json()["data"]
    assert engine.loaded_dtypes == ["float32"], "the model was never reloaded"


def test_a_load_that_does_not_fit_is_lowered_visibly_and_the_next_load_is_as_configured(
    make_client: MakeClient,
) -> None:
    client, engine = tight_client(make_client)
    engine.fits = {"int8"}
    lowered = embed(client, ["hello"])
    assert lowered.status_code == 200, lowered.text
    assert lowered.headers["x-inferrelay-remediation"] == "local/tight:lower_precision(float32 -> int8, to load)"
    [slot] = loaded(client)
    assert (slot["dtype"], slot["remedied"], slot["configured"]["dtype"]) == ("int8", True, "float32")
    assert events(client) == ["lower_precision"]
    stats = client.get("/api/v1/runtime/stats").json()
    assert stats["remediation"]["emb"] == {"lower_precision": 1}
    assert stats["models"]["emb"]["loaded"][0]["remedied"] is True

    engine.fits = {"float32", "int8"}  # memory allows again: the next load is back at the configured precision
    assert client.post("/api/v1/runtime/models/unload", json={"name": "emb"}).status_code == 200
    restored = embed(client, ["hello"])
    assert restored.status_code == 200, restored.text
    assert "x-inferrelay-remediation" not in restored.headers
    [slot] = loaded(client)
    assert (slot["dtype"], slot["remedied"]) == ("float32", False)
    assert events(client)[-2:] == ["unloaded", "restored"]
    assert engine.loaded_dtypes == ["int8", "float32"]


def test_a_ladder_that_runs_out_leaves_no_lowered_precision_behind(make_client: MakeClient) -> None:
    client, engine = tight_client(make_client)
    engine.fits = set()  # neither float32 nor int8: the ladder runs out
    failed = embed(client, ["hello"])
    assert_error(failed, 503, "all_backends_failed")
    assert failed.headers["x-inferrelay-attempts"] == "local/tight=out_of_memory"
    assert "local/tight:lower_precision(float32 -> int8, to load)" in failed.headers["x-inferrelay-remediation"]
    engine.fits = {"float32", "int8"}
    served = embed(client, ["hello"])
    assert served.status_code == 200, served.text
    assert "x-inferrelay-remediation" not in served.headers
    assert engine.loaded_dtypes == ["float32"]


def test_an_input_past_the_window_is_cut_by_default_and_refused_when_asked(make_client: MakeClient) -> None:
    models = [
        spec("emb", ["fake"], ["embeddings"], context_length=4),
        spec("strict", ["fake"], ["embeddings"], context_length=4).model_copy(update={"truncate": False}),
    ]
    client = make_client(models)
    long, first = "one two three four five six", "one two three four"

    def vector(model: str, text: str, **extra: Any) -> Any:
        response = client.post("/v1/embeddings", json={"model": model, "input": [text], **extra})
        assert response.status_code == 200, response.text
        assert "x-inferrelay-remediation" not in response.headers
        return response.json()["data"][0]["embedding"]

    assert vector("emb", long) == vector("emb", first)
    assert vector("strict", long, truncate=True) == vector("emb", first)  # the request's choice wins
    for model, extra in (("emb", {"truncate": False}), ("strict", {})):
        refused = client.post("/v1/embeddings", json={"model": model, "input": ["x", long], **extra})
        error = assert_error(refused, 400, "context_length_exceeded", "input")
        assert error["message"].startswith("input[1] has 6 tokens; this model takes at most 4")
