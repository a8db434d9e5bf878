"""Tool calling on local engines: the tools described to the model, its output constrained to a call, read back.

Local models' chat templates differ in whether and how they render tools (the
embedded SmolLM2's does not), so inferrelay describes the tools itself in a
system message and asks for one JSON object `{"name": ..., "arguments": {...}}`.
With `tool_choice` "required" or a named function, constrained decoding
(engines/constrained.py) makes the output exactly such an object, its
arguments valid against the function's parameters. With "auto", the output
is free and read as a call when it parses as one. Remote providers receive
tools as sent and call them their own way.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, replace
from typing import Any

from inferrelay.engines.base import Constraint, GenerationRequest
from inferrelay.errors import bad_request

INSTRUCTIONS = (
    "You can call these functions:\n{functions}\n"
    'To call one, answer with only a JSON object: {{"name": <function name>, "arguments": <its arguments>}}.'
)


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as OpenAI sends it

    def as_openai(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


@dataclass(frozen=True)
class ToolPlan:
    """What the local path does for a request with tools: the request to generate, and how to read its text."""

    functions: dict[str, dict[str, Any]]  # name -> the function's definition
    forced: bool  # tool_choice required or named: the output is a call

    def read(self, text: str) -> list[ToolCall]:
        """The calls in the model's output: none for plain text under tool_choice auto."""
        try:
            answer = json.loads(text)
        except ValueError:
            return []
        if not isinstance(answer, dict) or answer.get("name") not in self.functions:
            return []
        arguments = answer.get("arguments", {})
        return [ToolCall(f"call_{uuid.uuid4().hex[:24]}", answer["name"], json.dumps(arguments))]


def plan_tools(
    request: GenerationRequest, tools: list[dict[str, Any]], choice: Any
) -> tuple[GenerationRequest, ToolPlan]:
    """The request with the tools described and, when a call is required, constrained to one."""
    functions = _functions(tools)
    if choice == "none":
        return request, ToolPlan({}, forced=False)
    chosen = _chosen(choice, functions)
    offered = {name: functions[name] for name in chosen}
    described = "\n".join(json.dumps(f, separators=(",", ":")) for f in offered.values())
    system = {"role": "system", "content": INSTRUCTIONS.format(functions=described)}
    messages = [system, *(request.messages or [])]
    forced = choice == "required" or isinstance(choice, dict)
    constraint = Constraint("json_schema", _call_schema(offered)) if forced else request.constraint
    return replace(request, messages=messages, constraint=constraint), ToolPlan(offered, forced)


def _functions(tools: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    functions = {}
    for index, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if tool.get("type") != "function" or not isinstance(function, dict) or not function.get("name"):
            raise bad_request(f"tools.{index}: a tool is {{'type': 'function', 'function': {{'name': ...}}}}", "tools")
        functions[function["name"]] = function
    return functions


def _chosen(choice: Any, functions: dict[str, dict[str, Any]]) -> list[str]:
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        if name not in functions:
            raise bad_request(f"tool_choice names {name!r}, which is not among the tools", "tool_choice")
        return [name]
    if choice not in (None, "auto", "required"):
        raise bad_request("tool_choice is 'none', 'auto', 'required' or a named function", "tool_choice")
    return list(functions)


def _call_schema(functions: dict[str, dict[str, Any]]) -> dict[str, Any]:
    calls = [
        {
            "type": "object",
            "properties": {
                "name": {"const": name},
                "arguments": function.get("parameters") or {"type": "object", "properties": {}},
            },
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for name, function in functions.items()
    ]
    return calls[0] if len(calls) == 1 else {"anyOf": calls}
