"""The Responses API through the official client against a real server with the embedded SmolLM2."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jsonschema
import openai
import pytest
from openai.lib.streaming.responses import ResponseStreamState
from openai.types.responses import ResponseStreamEvent
from pydantic import TypeAdapter

from inferrelay.config.embedded import SMOLLM2
from inferrelay.server.responses import ResponsesRequest, ResponseWriter

pytestmark = pytest.mark.slow

QUESTION = "What is the capital of France?"
WEATHER_ARGS = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 40}, "unit": {"enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "unit"],
    "additionalProperties": False,
}
WEATHER: Any = {"type": "function", "name": "get_weather", "description": "The current weather in a city",
                "parameters": WEATHER_ARGS, "strict": True}  # fmt: skip
ASK = "What is the weather in Paris, in celsius?"


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


def only_call(response: Any) -> Any:
    """The response's one output item, a completed call to get_weather whose arguments validate."""
    (call,) = response.output
    assert call.type == "function_call"
    assert (call.name, call.status) == ("get_weather", "completed")
    assert call.call_id
    assert call.id.startswith("fc_")
    jsonschema.validate(json.loads(call.arguments), WEATHER_ARGS)
    return call


@pytest.mark.parametrize("choice", ["required", {"type": "function", "name": "get_weather"}])
def test_a_forced_function_call_comes_back_as_a_function_call_item(client: openai.OpenAI, choice: Any) -> None:
    response = client.responses.create(
        model=SMOLLM2.name, input=ASK, tools=[WEATHER], tool_choice=choice, temperature=0, max_output_tokens=96
    )
    assert response.status == "completed"
    assert response.output_text == ""
    only_call(response)
    again = client.responses.create(
        model=SMOLLM2.name, input=ASK, tools=[WEATHER], tool_choice=choice, temperature=0, max_output_tokens=96
    )
    assert only_call(again).arguments == only_call(response).arguments  # greedy: the same call


def test_a_streamed_function_call_follows_openais_events(client: openai.OpenAI) -> None:
    named: Any = {"type": "function", "name": "get_weather"}
    kwargs: Any = {"model": SMOLLM2.name, "input": ASK, "tools": [WEATHER], "tool_choice": named, "temperature": 0}
    whole = only_call(client.responses.create(**kwargs, max_output_tokens=96))
    with client.responses.stream(**kwargs, max_output_tokens=96) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [event.type for event in events]
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        *["response.function_call_arguments.delta"] * kinds.count("response.function_call_arguments.delta"),
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [event.sequence_number for event in events] == list(range(1, len(events) + 1))
    added, done = events[2], events[-2]
    assert added.item.type == "function_call"
    assert (added.item.status, added.item.arguments) == ("in_progress", "")
    deltas = "".join(event.delta for event in events if event.type == "response.function_call_arguments.delta")
    arguments_done = events[-3]
    assert arguments_done.arguments == deltas == done.item.arguments
    assert arguments_done.item_id == added.item.id == done.item.id
    call = only_call(final)
    assert (call.id, call.call_id, call.arguments) == (added.item.id, added.item.call_id, deltas)
    assert json.loads(call.arguments) == json.loads(whole.arguments)  # the same greedy call, whole or streamed
    assert call.parsed_arguments == json.loads(call.arguments)  # strict: the SDK parsed it against the tool
    assert final.usage is not None
    assert final.usage.output_tokens > 0


def test_a_function_call_output_sent_back_gets_a_text_answer(client: openai.OpenAI) -> None:
    first = client.responses.create(
        model=SMOLLM2.name, input=ASK, tools=[WEATHER], tool_choice="required", temperature=0, max_output_tokens=96
    )
    call = only_call(first)
    result = {"type": "function_call_output", "call_id": call.call_id, "output": json.dumps({"celsius": 21})}
    history: Any = [{"role": "user", "content": ASK}, call.model_dump(exclude_none=True), result]
    final = client.responses.create(
        model=SMOLLM2.name, input=history, tools=[WEATHER], tool_choice="none", temperature=0, max_output_tokens=48
    )
    assert final.status == "completed"
    assert [item.type for item in final.output] == ["message"]
    assert final.output_text.strip()
    streamed = client.responses.create(
        model=SMOLLM2.name, input=history, tools=[WEATHER], tool_choice="none", temperature=0, max_output_tokens=48,
        stream=True,
    )  # fmt: skip
    completed = [event.response for event in streamed if event.type == "response.completed"]
    assert completed[0].output_text == final.output_text  # the same greedy answer, streamed


def test_malformed_function_items_and_hosted_tool_choices_are_400s(client: openai.OpenAI) -> None:
    no_call_id: Any = [{"role": "user", "content": ASK}, {"type": "function_call_output", "output": "21"}]
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model=SMOLLM2.name, input=no_call_id)
    assert "input.1.call_id" in refused.value.message
    with pytest.raises(openai.BadRequestError) as hosted:
        client.responses.create(model=SMOLLM2.name, input=ASK, tools=[WEATHER], tool_choice={"type": "web_search"})  # type: ignore[arg-type]
    assert "tool_choice" in hosted.value.message


def test_a_remote_streams_split_deltas_become_one_item_each_in_order() -> None:
    """A remote upstream streams text, then two calls whose arguments come in fragments: each becomes one item,
    read by the SDK's own stream state without complaint (no model here: the chat chunks are OpenAI's shapes)."""

    def chunk(delta: dict[str, Any]) -> str:
        return "data: " + json.dumps({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta}]})

    def call(index: int, *, first: bool, arguments: str) -> dict[str, Any]:
        head = {"id": f"call_{index}", "type": "function", "function": {"name": "get_weather"}} if first else {}
        return {
            "tool_calls": [{"index": index, **head, "function": {**head.get("function", {}), "arguments": arguments}}]
        }

    chat = [
        chunk({"role": "assistant", "content": "Looking"}), chunk({"content": " it up."}),
        chunk(call(0, first=True, arguments="")), chunk(call(0, first=False, arguments='{"city": "Par')),
        chunk(call(1, first=True, arguments='{"city": "Lyon", ')), chunk(call(0, first=False, arguments='is"}')),
        chunk(call(1, first=False, arguments='"unit": "celsius"}')),
        "data: " + json.dumps({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 11}}), "data: [DONE]",
    ]  # fmt: skip

    async def upstream() -> AsyncIterator[str]:
        for event in chat:
            yield event + "\n\n"

    async def rewrite() -> list[str]:
        writer = ResponseWriter(ResponsesRequest(model="remote", input=ASK, tools=[WEATHER], stream=True))
        return [event async for event in writer.stream(upstream())]

    reader = TypeAdapter[Any](ResponseStreamEvent)
    events = [reader.validate_json(e.split("data: ", 1)[1]) for e in asyncio.run(rewrite())]
    state = ResponseStreamState(input_tools=[WEATHER], text_format=openai.omit)
    for event in events:
        state.handle_event(event)
    assert [e.sequence_number for e in events] == list(range(1, len(events) + 1))
    final = events[-1].response
    assert events[-1].type == "response.completed"
    assert [item.type for item in final.output] == ["message", "function_call", "function_call"]
    assert final.output_text == "Looking it up."
    assert [(c.call_id, json.loads(c.arguments)) for c in final.output[1:]] == [
        ("call_0", {"city": "Paris"}), ("call_1", {"city": "Lyon", "unit": "celsius"})
    ]  # fmt: skip
    done = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert [(e.output_index, e.arguments) for e in done] == [(i, c.arguments) for i, c in enumerate(final.output) if i]
    assert final.usage is not None
    assert (final.usage.input_tokens, final.usage.output_tokens) == (7, 11)
