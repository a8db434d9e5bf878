"""The cheap bound (engines/token_bound.py): a prompt surely past the context is refused without tokenizing it."""

from __future__ import annotations

import pytest

from inferrelay.engines.base import GenerationRequest, Piece, Sampling, TokenTextModel
from inferrelay.engines.token_bound import fewest_tokens, longest_entry, longest_piece, refuse_surely_over
from inferrelay.errors import ErrorKind, InferrelayError


def test_fewest_tokens_is_bytes_over_the_longest_token_rounded_up() -> None:
    assert fewest_tokens(["abcd", "efg"], 2) == 4
    assert fewest_tokens(["é" * 3], 3) == 2  # six UTF-8 bytes
    assert fewest_tokens([""], 5) == 0


def test_longest_entry_reads_byte_level_entries_as_bytes_and_others_as_utf8() -> None:
    assert longest_entry(["Ġthe", "ĠĠĠĠĠĠ", "<|im_start|>"]) == 12  # "Ġ" is one byte (a space)
    assert longest_entry(["▁the", "<0xE4>"]) == 6  # SentencePiece: at most its UTF-8 bytes ("▁" is 3)
    assert longest_piece([b"ab", b"abcde"]) == 6  # one more: a lone piece may have lost its leading space


def test_a_prompt_surely_past_the_context_is_refused_and_one_near_it_is_not() -> None:
    with pytest.raises(InferrelayError) as refused:
        refuse_surely_over(["x" * 4000], 4, 1000, "prompt")
    assert refused.value.kind is ErrorKind.CONTEXT_LENGTH
    assert refused.value.body()["error"]["code"] == "context_length_exceeded"
    assert refused.value.param == "prompt"
    refuse_surely_over(["x" * 3996], 4, 1000, "prompt")  # 999 tokens at least: room for one, counted exactly
    refuse_surely_over(["x" * 10**6], 0, 1000, "prompt")  # no bound known: counted


class CountingModel(TokenTextModel):
    """One token per character; counts the calls to `encode`."""

    engine_name = "counting"
    context_length = 100
    longest_token_bytes = 4

    def __init__(self) -> None:
        self.encoded = 0

    def encode(self, request: GenerationRequest) -> list[int]:
        self.encoded += 1
        return [ord(c) for c in request.prompt or ""]

    def generate_ids(self, ids: list[int], max_new: int, sampling: Sampling):  # type: ignore[no-untyped-def]
        yield from ids[:max_new]

    def detokenize(self, ids: list[int]) -> str:
        return "".join(map(chr, ids))


def test_the_model_refuses_before_encoding_and_encodes_what_may_fit() -> None:
    model = CountingModel()
    with pytest.raises(InferrelayError, match="at least 100 tokens"):
        list(model.stream(GenerationRequest(prompt="x" * 400)))
    with pytest.raises(InferrelayError, match="at least 100 tokens"):
        list(model.stream(GenerationRequest(messages=[{"role": "user", "content": "x" * 200}] * 2)))
    assert model.encoded == 0
    with pytest.raises(InferrelayError, match="the prompt has 396 tokens"):  # 99 at least: counted exactly
        list(model.stream(GenerationRequest(prompt="x" * 396)))
    assert model.encoded == 1
    last: Piece = list(model.stream(GenerationRequest(prompt="abc", max_tokens=2)))[-1]
    assert (last.prompt_tokens, last.completion_tokens) == (3, 2)


@pytest.mark.slow
def test_the_real_vocabularies_bound_real_token_counts() -> None:
    """SmolLM2's GGUF through llama.cpp and its tokenizer through transformers: the bound never passes the count."""
    llama_cpp = pytest.importorskip("llama_cpp")
    from inferrelay.config.embedded import SMOLLM2
    from inferrelay.config.sources import resolve_source
    from inferrelay.engines.llamacpp import _pieces

    llm = llama_cpp.Llama(str(resolve_source(SMOLLM2.source).path), n_ctx=256, verbose=False)
    longest = longest_piece(_pieces(llm))
    assert longest >= 65  # 64 spaces in one token (and a longer special one), plus one
    for text in [" " * 10_000, "a " * 20_000, "Hello, world. " * 2000, "é" * 5000, "日本語" * 3000, "\n\n\t" * 3000]:
        counted = len(llm.tokenize(text.encode(), add_bos=False))
        assert fewest_tokens([text], longest) <= counted, text[:10]
    llm.close()
