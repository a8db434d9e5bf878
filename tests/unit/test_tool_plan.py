"""The local tool protocol: tools described in a system message, a forced call constrained to a schema, read back."""

from __future__ import annotations

import json

from inferrelay.engines.base import GenerationRequest
from inferrelay.routing.tools import plan_tools

WEATHER = {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}
TIME = {"name": "get_time", "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}}}
TOOLS = [{"type": "function", "function": WEATHER}, {"type": "function", "function": TIME}]
ASK = GenerationRequest(messages=[{"role": "user", "content": "Weather in Paris?"}])


def test_required_constrains_the_output_to_any_offered_call() -> None:
    request, plan = plan_tools(ASK, TOOLS, "required")
    assert request.messages is not None
    assert request.messages[0]["role"] == "system"
    assert '"name":"get_weather"' in request.messages[0]["content"]
    assert request.messages[1:] == ASK.messages
    assert request.constraint is not None
    assert request.constraint.kind == "json_schema"
    names = [c["properties"]["name"]["const"] for c in request.constraint.value["anyOf"]]
    assert names == ["get_weather", "get_time"]
    assert plan.forced


def test_a_named_function_is_the_only_one_offered() -> None:
    request, plan = plan_tools(ASK, TOOLS, {"type": "function", "function": {"name": "get_time"}})
    assert request.constraint is not None
    assert request.constraint.value["properties"]["name"] == {"const": "get_time"}
    assert request.constraint.value["properties"]["arguments"] == TIME["parameters"]
    assert list(plan.functions) == ["get_time"]


def test_auto_describes_the_tools_without_a_constraint_and_none_leaves_the_request_alone() -> None:
    request, plan = plan_tools(ASK, TOOLS, "auto")
    assert request.constraint is None
    assert not plan.forced
    untouched, nothing = plan_tools(ASK, TOOLS, "none")
    assert untouched == ASK
    assert nothing.read('{"name": "get_weather", "arguments": {}}') == []


def test_reading_calls_back() -> None:
    _, plan = plan_tools(ASK, TOOLS, "auto")
    (call,) = plan.read('{"name": "get_weather", "arguments": {"city": "Paris"}}')
    assert call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "Paris"}
    assert call.as_openai()["type"] == "function"
    assert call.id.startswith("call_")
    assert plan.read("Paris is sunny.") == []
    assert plan.read('{"name": "unknown", "arguments": {}}') == []
    assert plan.read("[1, 2]") == []
