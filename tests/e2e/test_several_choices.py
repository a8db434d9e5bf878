"""OpenAI's `n` on a local engine, through the official client: several choices, each a whole answer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
import pytest

from inferrelay.config.embedded import SMOLLM2

pytestmark = pytest.mark.slow

ASK = [{"role": "user", "content": "Name a colour."}]


def test_n_choices_are_indexed_counted_and_repeat_with_their_seed(start_server: Any, test_home: Path) -> None:
    server = start_server(test_home)
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)

    def ask() -> Any:
        return client.chat.completions.create(
            model=SMOLLM2.name, messages=ASK, n=3, temperature=1.0, seed=11, max_tokens=12  # type: ignore[arg-type]
        )

    first, again = ask(), ask()
    assert [c.index for c in first.choices] == [0, 1, 2]
    assert all(c.message.content is not None for c in first.choices)
    assert [c.message.content for c in first.choices] == [c.message.content for c in again.choices], "seeded"
    one = client.chat.completions.create(
        model=SMOLLM2.name, messages=ASK, temperature=1.0, seed=11, max_tokens=12  # type: ignore[arg-type]
    )
    assert one.choices[0].message.content == first.choices[0].message.content, "choice 0 is the n=1 answer"
    assert first.usage is not None
    assert one.usage is not None
    assert first.usage.prompt_tokens == one.usage.prompt_tokens, "the prompt is counted once"
    assert first.usage.completion_tokens > one.usage.completion_tokens


def test_several_choices_in_one_stream_are_refused_where_no_step_can_stream_them(
    start_server: Any, test_home: Path
) -> None:
    server = start_server(test_home)
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=SMOLLM2.name, messages=ASK, n=2, stream=True, max_tokens=4  # type: ignore[arg-type]
        )
    body: Any = caught.value.body
    assert body["code"] == "unsupported"
    assert body["param"] == "n"
