"""Tools and structured outputs on the local engines, through the official client against real servers.

Never the tiny model's wording: a forced call must be a call to the named
function with arguments that validate; a parsed response must be an
instance of the model class; the text of a final answer must exist.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import openai
import pytest
from pydantic import BaseModel

from inferrelay.config.embedded import SMOLLM2

pytestmark = pytest.mark.slow

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 40}, "unit": {"enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
ASK = [{"role": "user", "content": "What is the weather in Paris, in celsius?"}]
HIDDEN = {"llamacpp": (), "onnx": ("llama_cpp",), "torch": ("llama_cpp", "onnxruntime_genai")}


class Weather(BaseModel):
    city: str
    celsius: int
    sunny: bool


def client_for(start_server: Any, home: Path, engine: str) -> openai.OpenAI:
    server = start_server(home, block_modules=HIDDEN[engine])
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def check_call(call: Any) -> dict[str, Any]:
    assert call.type == "function"
    assert call.function.name == "get_weather"
    arguments = json.loads(call.function.arguments)
    jsonschema.validate(arguments, WEATHER["function"]["parameters"])  # type: ignore[index]
    return arguments  # type: ignore[no-any-return]


@pytest.mark.parametrize("engine", ["llamacpp", "onnx", "torch"])
def test_parse_returns_a_valid_object_on_each_engine(start_server: Any, test_home: Path, engine: str) -> None:
    client = client_for(start_server, test_home, engine)
    raw = client.chat.completions.with_raw_response.parse(
        model=SMOLLM2.name,
        messages=[{"role": "user", "content": "Describe the weather in Paris today."}],
        response_format=Weather,
        temperature=0,
        max_tokens=200,
    )
    assert raw.headers["x-inferrelay-backend"] == f"local/{engine}"
    parsed = raw.parse().choices[0].message.parsed
    assert isinstance(parsed, Weather)


def test_a_tool_round_trip_with_the_official_client(start_server: Any, test_home: Path) -> None:
    client = client_for(start_server, test_home, "llamacpp")
    first = client.chat.completions.create(
        model=SMOLLM2.name, messages=ASK, tools=[WEATHER], tool_choice="required", temperature=0, max_tokens=96  # type: ignore[list-item]
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls or []
    check_call(call)
    history: list[Any] = [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"celsius": 21, "sky": "clear"})},
    ]
    final = client.chat.completions.create(
        model=SMOLLM2.name, messages=history, tools=[WEATHER], tool_choice="none", temperature=0, max_tokens=48  # type: ignore[list-item]
    )
    assert final.choices[0].message.content
    assert not final.choices[0].message.tool_calls


def test_a_streamed_forced_call_reassembles_into_the_same_call(start_server: Any, test_home: Path) -> None:
    client = client_for(start_server, test_home, "llamacpp")
    named = {"type": "function", "function": {"name": "get_weather"}}
    kwargs: Any = {"model": SMOLLM2.name, "messages": ASK, "tools": [WEATHER], "tool_choice": named, "temperature": 0}
    whole = client.chat.completions.create(**kwargs, max_tokens=96).choices[0].message.tool_calls or []
    names, arguments, finish = [], [], None
    for chunk in client.chat.completions.create(**kwargs, max_tokens=96, stream=True):
        for delta in chunk.choices[0].delta.tool_calls or [] if chunk.choices else []:
            names.append(delta.function.name if delta.function else None)
            arguments.append(delta.function.arguments if delta.function else "")
        if chunk.choices and chunk.choices[0].finish_reason:
            finish = chunk.choices[0].finish_reason
    assert finish == "tool_calls"
    assert names[0] == "get_weather"
    assert json.loads("".join(a or "" for a in arguments)) == json.loads(whole[0].function.arguments)
