"""decoding.py: stop strings, incremental detokenizing and the token budget, engine-free."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from inferrelay.engines.base import GenerationRequest, Sampling, TokenTextModel
from inferrelay.engines.decoding import (
    DEFAULT_MAX_TOKENS,
    IncrementalDetokenizer,
    StopScanner,
    check_input_lengths,
    plan_max_tokens,
)
from inferrelay.errors import ErrorKind, InferrelayError


def scan(stops: tuple[str, ...], pieces: list[str]) -> tuple[str, bool]:
    """Feed pieces until a stop; return everything emitted (flushed at the end) and whether it stopped."""
    scanner = StopScanner(stops)
    out: list[str] = []
    for piece in pieces:
        text, stopped = scanner.feed(piece)
        out.append(text)
        if stopped:
            return "".join(out), True
    return "".join(out) + scanner.flush(), False


# --- StopScanner -------------------------------------------------------------------------------


def test_no_stops_passes_text_through() -> None:
    scanner = StopScanner(())
    assert scanner.feed("hello <") == ("hello <", False)
    assert scanner.flush() == ""


def test_empty_stop_strings_are_ignored() -> None:
    assert StopScanner(("",)).feed("abc") == ("abc", False)


def test_stop_inside_one_piece_cuts_before_it() -> None:
    assert StopScanner(("STOP",)).feed("abcSTOPdef") == ("abc", True)


def test_stop_split_across_pieces() -> None:
    scanner = StopScanner(("</s>",))
    assert scanner.feed("Hello <") == ("Hello ", False)
    assert scanner.feed("/s") == ("", False)
    assert scanner.feed("> and more") == ("", True)


def test_several_stops_the_earliest_in_the_text_wins() -> None:
    # "STOP" is listed second but occurs first in the text.
    assert StopScanner(("END", "STOP")).feed("x STOP y END") == ("x ", True)
    assert scan(("END", "STOP"), ["a E", "N", "D b STOP"]) == ("a ", True)


def test_held_back_prefix_that_is_no_stop_is_released() -> None:
    scanner = StopScanner(("STOP",))
    assert scanner.feed("go ST") == ("go ", False)
    assert scanner.feed("ART now") == ("START now", False)
    assert scanner.flush() == ""


def test_flush_releases_what_was_held_once() -> None:
    scanner = StopScanner(("STOP",))
    assert scanner.feed("the end S") == ("the end ", False)
    assert scanner.flush() == "S"
    assert scanner.flush() == ""


def test_hold_back_uses_the_longest_possible_start() -> None:
    # "xaa" could start "aab" at either trailing "a"; both must be held.
    scanner = StopScanner(("aab",))
    assert scanner.feed("xaa") == ("x", False)
    assert scanner.feed("ab") == ("a", True)


def test_after_a_stop_nothing_is_held() -> None:
    scanner = StopScanner(("STOP",))
    assert scanner.feed("aSTOPST") == ("a", True)
    assert scanner.flush() == ""


TEXT = "Hello world<|end|>tail"


@pytest.mark.parametrize("first", range(1, len(TEXT)))
def test_every_two_piece_split_stops_at_the_same_place(first: int) -> None:
    for second in range(first, len(TEXT) + 1):
        pieces = [TEXT[:first], TEXT[first:second], TEXT[second:]]
        assert scan(("<|end|>",), pieces) == ("Hello world", True), pieces


def test_text_without_stop_comes_out_whole_whatever_the_split() -> None:
    text = "a <|en d|> <|e"
    for cut in range(len(text) + 1):
        assert scan(("<|end|>",), [text[:cut], text[cut:]]) == (text, False)


# --- IncrementalDetokenizer --------------------------------------------------------------------


def utf8(ids: list[int]) -> str:
    """A byte-level tokenizer: one token per UTF-8 byte."""
    return bytes(ids).decode("utf-8", errors="replace")


def test_detokenizer_holds_back_an_incomplete_character() -> None:
    detok = IncrementalDetokenizer(utf8)
    assert detok.push(ord("a")) == "a"
    assert detok.push(0xC3) == ""  # first byte of "é"
    assert detok.push(0xA9) == "é"
    assert detok.push(ord("!")) == "!"
    assert detok.flush() == ""


def test_detokenizer_four_byte_character() -> None:
    detok = IncrementalDetokenizer(utf8)
    pieces = [detok.push(b) for b in "😀".encode()]
    assert pieces == ["", "", "", "😀"]


def test_detokenizer_flush_releases_a_truncated_character() -> None:
    detok = IncrementalDetokenizer(utf8)
    assert detok.push(ord("x")) == "x"
    assert detok.push(0xE2) == ""
    assert detok.flush() == "\ufffd"
    assert IncrementalDetokenizer(utf8).flush() == ""


def test_detokenizer_emits_only_the_new_text() -> None:
    words = {0: "the", 1: "cat", 2: "sat"}
    detok = IncrementalDetokenizer(lambda ids: " ".join(words[i] for i in ids))
    assert [detok.push(i) for i in (0, 1, 2)] == ["the", " cat", " sat"]


# --- plan_max_tokens / check_input_lengths -----------------------------------------------------


def test_default_budget_is_capped() -> None:
    assert plan_max_tokens(10, None, 2048) == DEFAULT_MAX_TOKENS == 512


def test_default_budget_shrinks_to_the_room_left() -> None:
    assert plan_max_tokens(2000, None, 2048) == 48


def test_explicit_budget_up_to_the_room() -> None:
    assert plan_max_tokens(10, 100, 2048) == 100
    assert plan_max_tokens(10, 2038, 2048) == 2038


@pytest.mark.parametrize("prompt", [2048, 3000])
def test_prompt_filling_the_context_is_refused(prompt: int) -> None:
    with pytest.raises(InferrelayError) as caught:
        plan_max_tokens(prompt, None, 2048)
    assert caught.value.kind is ErrorKind.CONTEXT_LENGTH
    assert caught.value.param == "messages"
    assert caught.value.status == 400
    assert "2048" in caught.value.message
    assert str(prompt) in caught.value.message


def test_budget_past_the_room_is_refused() -> None:
    with pytest.raises(InferrelayError) as caught:
        plan_max_tokens(10, 2039, 2048)
    assert caught.value.kind is ErrorKind.CONTEXT_LENGTH
    assert caught.value.param == "max_tokens"
    assert "2039" in caught.value.message


def test_input_lengths_past_the_window_name_the_input() -> None:
    check_input_lengths([8, 1], 8)
    with pytest.raises(InferrelayError) as caught:
        check_input_lengths([3, 9], 8)
    assert caught.value.kind is ErrorKind.CONTEXT_LENGTH
    assert caught.value.param == "input"
    assert "input[1]" in caught.value.message


# --- TokenTextModel.stream over a byte-level model ---------------------------------------------------


class ByteModel(TokenTextModel):
    """Answers `answer`, one UTF-8 byte per token; the prompt is one token per byte too."""

    engine_name = "bytes"

    def __init__(self, answer: str, context_length: int = 256) -> None:
        self.answer = answer
        self.context_length = context_length

    def encode(self, request: GenerationRequest) -> list[int]:
        return list((request.prompt or "").encode())

    def generate_ids(self, ids: list[int], max_new: int, sampling: Sampling) -> Iterator[int]:
        yield from list(self.answer.encode())[:max_new]

    def detokenize(self, ids: list[int]) -> str:
        return utf8(ids)


def test_stream_never_splits_a_character() -> None:
    model = ByteModel("héllo wörld 😀")
    pieces = list(model.stream(GenerationRequest(prompt="hi")))
    assert all("\ufffd" not in p.text for p in pieces)
    assert "".join(p.text for p in pieces) == "héllo wörld 😀"
    last = pieces[-1]
    assert (last.finish_reason, last.prompt_tokens, last.completion_tokens) == (
        "stop",
        2,
        len("héllo wörld 😀".encode()),
    )
    assert all(p.finish_reason is None for p in pieces[:-1])


def test_stream_stop_string_with_multibyte_text() -> None:
    answer = ByteModel("héllo wörld").generate(GenerationRequest(prompt="hi", stop=("wö",)))
    assert answer.text == "héllo "
    assert answer.finish_reason == "stop"


def test_stream_length_when_budget_runs_out() -> None:
    answer = ByteModel("abcdef").generate(GenerationRequest(prompt="hi", max_tokens=3))
    assert (answer.text, answer.finish_reason, answer.completion_tokens) == ("abc", "length", 3)


def test_stream_releases_held_stop_prefix_at_the_end() -> None:
    answer = ByteModel("see you ST").generate(GenerationRequest(prompt="hi", stop=("STOP",)))
    assert answer.text == "see you ST"
    assert answer.finish_reason == "stop"
