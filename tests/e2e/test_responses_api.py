"""The Responses API through the official client against a real server with the embedded SmolLM2."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
import pytest

from inferrelay.config.embedded import SMOLLM2

pytestmark = pytest.mark.slow

QUESTION = "What is the capital of France?"


@pytest.fixture
def client(start_server: Any, test_home: Path) -> openai.OpenAI:
    server = start_server(test_home)
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def test_a_plain_response_answers_as_the_chat_path_does(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model=SMOLLM2.name, input=QUESTION, instructions="Answer in one sentence.", temperature=0, max_output_tokens=24
    )
    assert response.status == "completed"
    assert response.output_text.strip()
    assert response.usage is not None
    assert response.usage.output_tokens > 0
    chat = client.chat.completions.create(
        model=SMOLLM2.name,
        messages=[{"role": "system", "content": "Answer in one sentence."}, {"role": "user", "content": QUESTION}],
        temperature=0,
        max_tokens=24,
    )
    assert response.output_text == chat.choices[0].message.content  # the same route, the same greedy answer


def test_a_streamed_response_delivers_deltas_then_the_whole(client: openai.OpenAI) -> None:
    deltas: list[str] = []
    kinds: list[str] = []
    completed = None
    events = client.responses.create(
        model=SMOLLM2.name, input=QUESTION, temperature=0, max_output_tokens=24, stream=True
    )
    for event in events:
        kinds.append(event.type)
        if event.type == "response.output_text.delta":
            deltas.append(event.delta)
        if event.type == "response.completed":
            completed = event.response
    assert kinds[0] == "response.created"
    assert kinds[-1] == "response.completed"
    assert len(deltas) > 1
    assert completed is not None
    assert completed.output_text == "".join(deltas)
    assert completed.usage is not None
    assert completed.usage.output_tokens > 0


def test_input_items_with_a_conversation_and_a_stored_response_refused(client: openai.OpenAI) -> None:
    items: Any = [
        {"role": "user", "content": [{"type": "input_text", "text": "Hello"}]},
        {"role": "assistant", "content": [{"type": "output_text", "text": "Hi! How can I help?"}]},
        {"role": "user", "content": QUESTION},
    ]
    response = client.responses.create(model=SMOLLM2.name, input=items, temperature=0, max_output_tokens=8)
    assert response.output_text.strip()
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model=SMOLLM2.name, input="Go on", previous_response_id="resp_123")
    assert "keeps no responses" in refused.value.message
