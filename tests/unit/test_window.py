"""The cut before tokenizing: a long text is cut after a whole word, only as far as the window needs, and never
tokenized whole (a word is a token here)."""

from __future__ import annotations

import json
from pathlib import Path

from inferrelay.engines.window import GROWTH, Window, at_word_end, longest_token, window_of


class WordCounter:
    """Counts words as tokens, with two specials; remembers how many characters it was asked to read."""

    def __init__(self) -> None:
        self.read: list[int] = []

    def __call__(self, text: str) -> int:
        self.read.append(len(text))
        return len(text.split()) + 2


def test_a_cut_ends_after_a_whole_word() -> None:
    assert at_word_end("alpha beta gamma", 8) == "alpha"
    assert at_word_end("alpha beta gamma", 10) == "alpha beta"  # the space right after the bound counts
    assert at_word_end("alpha   beta", 7) == "alpha"
    assert at_word_end("nospacesatall", 4) == "nosp"  # one long word: cut mid-word, where nothing else can


def test_short_texts_are_not_counted_and_a_long_one_is_read_only_as_far_as_its_window() -> None:
    count, window = WordCounter(), Window(tokens=10, chars_per_token=6)
    huge = "word " * 1_000_000
    texts, cut = window.cut(["a short one", huge], count)
    assert cut == {1}
    assert texts[0] == "a short one"
    assert texts[1] == at_word_end(huge, 60)
    assert count(texts[1]) > 10
    assert max(count.read) <= 60, "only the prefix was tokenized"


def test_text_that_makes_few_tokens_grows_the_cut_until_it_is_over_the_window() -> None:
    count, window = WordCounter(), Window(tokens=10, chars_per_token=6)
    spaced = " " * 200 + "word " * 100  # the first 60 characters hold no token at all
    texts, cut = window.cut([spaced], count)
    assert cut == {0}
    assert spaced.startswith(texts[0])
    assert count(texts[0]) > 10
    assert len(texts[0]) < len(spaced)


def test_a_text_under_the_window_is_kept_whole_and_a_grown_cut_stops_at_its_limit() -> None:
    count, window = WordCounter(), Window(tokens=10, chars_per_token=6)
    under = " " * 100 + "three short words"  # longer than 60 characters, fewer than 10 tokens
    assert window.cut([under], count) == ([under], set())
    endless = " " * (60 * GROWTH * 4) + "word"
    texts, cut = window.cut([endless], count)
    assert cut == {0}, "past GROWTH times its first bound a text is taken as over the window"
    assert len(texts[0]) <= 60 * GROWTH


def test_the_window_is_the_smallest_of_configuration_and_the_model_folder(tmp_path: Path) -> None:
    assert window_of(tmp_path, 512) == 512
    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 512}))
    assert window_of(tmp_path, 2048) == 512
    (tmp_path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 256}))
    assert window_of(tmp_path, 2048) == 256
    assert window_of(tmp_path, 128) == 128


def test_the_longest_token_leaves_out_wordpiece_continuations() -> None:
    assert longest_token(["a", "##abcdef", "abcd"]) == 6
    assert longest_token([]) == 1
