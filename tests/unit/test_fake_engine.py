"""TextModel streaming, usage and stop strings through the fake engine; its fault injection and embeddings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from inferrelay.config.schema import ModelSpec
from inferrelay.engines.base import EmbeddingModel, GenerationRequest, LoadedModel, TextModel
from inferrelay.engines.fake import FakeEngine
from inferrelay.errors import ErrorKind, InferrelayError
from inferrelay.routing.batching import embed_sorted


def load(
    home: Path, capabilities: tuple[str, ...] = ("chat", "completion"), context_length: int = 2048, **options: Any
) -> LoadedModel:
    model = ModelSpec.model_validate(
        {
            "name": "m",
            "source": "unused",
            "capabilities": list(capabilities),
            "engines": ["fake"],
            "context_length": context_length,
            "engine_options": {"fake": options} if options else {},
        }
    )
    return FakeEngine().load(model, "cpu", home)


def decoder(home: Path, **kwargs: Any) -> TextModel:
    model = load(home, **kwargs)
    assert isinstance(model, TextModel)
    return model


def encoder(home: Path, **options: Any) -> EmbeddingModel:
    model = load(home, ("embeddings",), context_length=16, **options)
    assert isinstance(model, EmbeddingModel)
    return model


def chat(text: str, **kwargs: Any) -> GenerationRequest:
    return GenerationRequest(
        messages=[{"role": "system", "content": "ignored"}, {"role": "user", "content": text}], **kwargs
    )


def test_capabilities_pick_decoder_or_encoder(tmp_path: Path) -> None:
    assert isinstance(load(tmp_path), TextModel)
    assert isinstance(load(tmp_path, ("embeddings",)), EmbeddingModel)


def test_generate_echoes_and_stops_on_its_own(tmp_path: Path) -> None:
    answer = decoder(tmp_path).generate(chat("hello brave new world"))
    assert answer.text == "echo: hello brave new world"
    assert answer.finish_reason == "stop"
    assert (answer.prompt_tokens, answer.completion_tokens) == (4, 5)


def test_completion_prompt(tmp_path: Path) -> None:
    answer = decoder(tmp_path).generate(GenerationRequest(prompt="one two"))
    assert answer.text == "echo: one two"


def test_max_tokens_gives_length(tmp_path: Path) -> None:
    answer = decoder(tmp_path).generate(chat("hello brave new world", max_tokens=2))
    assert answer.text == "echo: hello"
    assert answer.finish_reason == "length"
    assert (answer.prompt_tokens, answer.completion_tokens) == (4, 2)


def test_stop_string_cuts_and_gives_stop(tmp_path: Path) -> None:
    answer = decoder(tmp_path).generate(chat("hello brave new world", stop=("new",)))
    assert answer.text == "echo: hello brave "
    assert answer.finish_reason == "stop"
    assert answer.completion_tokens == 4  # echo:, hello, brave, new


def test_stop_string_spanning_two_tokens(tmp_path: Path) -> None:
    answer = decoder(tmp_path).generate(chat("hello brave new world", stop=("o b",)))
    assert answer.text == "echo: hell"
    assert answer.finish_reason == "stop"
    assert answer.completion_tokens == 3


def test_stop_reached_before_length(tmp_path: Path) -> None:
    answer = decoder(tmp_path).generate(chat("a b c d e f", max_tokens=3, stop=("b",)))
    assert (answer.text, answer.finish_reason) == ("echo: a ", "stop")


def test_stream_pieces_then_a_final_piece(tmp_path: Path) -> None:
    pieces = list(decoder(tmp_path).stream(chat("one two three")))
    assert [p.text for p in pieces] == ["echo:", " one", " two", " three", ""]
    assert all(p.finish_reason is None for p in pieces[:-1])
    last = pieces[-1]
    assert (last.finish_reason, last.prompt_tokens, last.completion_tokens) == ("stop", 3, 4)


def test_prompt_past_context_is_context_length(tmp_path: Path) -> None:
    model = decoder(tmp_path, context_length=3)
    with pytest.raises(InferrelayError) as caught:
        model.generate(chat("one two three four"))
    assert caught.value.kind is ErrorKind.CONTEXT_LENGTH
    assert caught.value.param == "messages"


def test_max_tokens_past_context_is_context_length(tmp_path: Path) -> None:
    model = decoder(tmp_path, context_length=8)
    with pytest.raises(InferrelayError) as caught:
        model.generate(chat("one two three", max_tokens=6))
    assert caught.value.kind is ErrorKind.CONTEXT_LENGTH
    assert caught.value.param == "max_tokens"
    assert model.generate(chat("one two three", max_tokens=5)).completion_tokens == 4


# --- fault injection ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["out_of_memory", "model_load_failed", "transient", "bad_request"])
def test_injected_load_failure(tmp_path: Path, kind: str) -> None:
    with pytest.raises(InferrelayError) as caught:
        load(tmp_path, fail_kind=kind, fail_on="load")
    assert caught.value.kind is ErrorKind(kind)
    assert "load" in caught.value.message


@pytest.mark.parametrize("kind", ["transient", "timeout", "context_length"])
def test_injected_request_failure_on_generation(tmp_path: Path, kind: str) -> None:
    model = decoder(tmp_path, fail_kind=kind)  # fail_on defaults to "request": the load succeeds
    with pytest.raises(InferrelayError) as caught:
        model.generate(chat("hi"))
    assert caught.value.kind is ErrorKind(kind)
    with pytest.raises(InferrelayError):
        list(model.stream(chat("hi")))


def test_injected_request_failure_on_embeddings(tmp_path: Path) -> None:
    model = encoder(tmp_path, fail_kind="out_of_memory", fail_on="request")
    with pytest.raises(InferrelayError) as caught:
        model.embed(["hi"])
    assert caught.value.kind is ErrorKind.OUT_OF_MEMORY


def test_fail_rate_zero_never_fails(tmp_path: Path) -> None:
    model = decoder(tmp_path, fail_kind="transient", fail_rate=0.0)
    for _ in range(20):
        assert model.generate(chat("hi")).text == "echo: hi"


def outcomes(model: TextModel, count: int) -> list[bool]:
    """True for each request answered; a failure must be the injected kind."""
    results: list[bool] = []
    kinds: set[ErrorKind] = set()
    for _ in range(count):
        try:
            model.generate(chat("hi"))
            results.append(True)
        except InferrelayError as exc:
            kinds.add(exc.kind)
            results.append(False)
    assert kinds <= {ErrorKind.TRANSIENT}
    return results


def test_fail_rate_draws_are_seeded(tmp_path: Path) -> None:
    first = outcomes(decoder(tmp_path, fail_kind="transient", fail_rate=0.5, seed=7), 40)
    again = outcomes(decoder(tmp_path, fail_kind="transient", fail_rate=0.5, seed=7), 40)
    other = outcomes(decoder(tmp_path, fail_kind="transient", fail_rate=0.5, seed=8), 40)
    assert first == again
    assert first != other
    assert 5 < first.count(False) < 35


def test_fail_on_load_spares_requests(tmp_path: Path) -> None:
    model = decoder(tmp_path, fail_kind="transient", fail_on="load", fail_rate=0.0)
    assert model.generate(chat("hi")).text == "echo: hi"


@pytest.mark.parametrize(
    "options",
    [{"fail_kind": "no_such_kind"}, {"fail_on": "sometimes"}, {"fail_rate": 2}, {"colour": "red"}],
)
def test_bad_options_are_refused_at_load(tmp_path: Path, options: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        load(tmp_path, **options)


# --- embeddings --------------------------------------------------------------------------------


def test_embeddings_are_deterministic_unit_float32(tmp_path: Path) -> None:
    texts = ["the cat", "a dog barks", "the cat"]
    out = encoder(tmp_path, dimensions=32).embed(texts)
    again = encoder(tmp_path, dimensions=32).embed(["the cat"])
    assert out.vectors.shape == (3, 32)
    assert out.vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out.vectors, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(out.vectors[0], out.vectors[2])
    np.testing.assert_array_equal(out.vectors[0], again.vectors[0])
    assert not np.allclose(out.vectors[0], out.vectors[1])
    assert out.prompt_tokens == 2 + 3 + 2


def test_default_dimensions(tmp_path: Path) -> None:
    assert encoder(tmp_path).embed(["x"]).vectors.shape == (1, 384)


def test_embedding_input_past_context(tmp_path: Path) -> None:
    model = encoder(tmp_path)
    with pytest.raises(InferrelayError) as caught:
        model.embed(["ok", " ".join(["w"] * 17)], truncate=False)
    assert caught.value.kind is ErrorKind.CONTEXT_LENGTH
    assert "input[1]" in caught.value.message
    cut = model.embed([" ".join(["w"] * 17), " ".join(["w"] * 16)])  # truncated by default: its first 16 words
    np.testing.assert_array_equal(cut.vectors[0], cut.vectors[1])


def test_embed_sorted_restores_input_order(tmp_path: Path) -> None:
    model = encoder(tmp_path, dimensions=8)
    texts = [" ".join(["w"] * (1 + (i * 7) % 11)) + f" t{i}" for i in range(45)]
    out = embed_sorted(model, texts, batch_size=8)
    expected = np.stack([model.embed([t]).vectors[0] for t in texts])
    np.testing.assert_array_equal(out.vectors, expected)
    assert out.prompt_tokens == sum(len(t.split()) for t in texts)
