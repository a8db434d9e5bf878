"""What a request needs, and which steps can give it: a local engine that cannot is skipped as `unsupported`, and
a remote provider receives the request exactly as sent (unknown fields too), unless its configuration refuses."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from inferrelay.config.mappings import MappingsFile
from inferrelay.config.providers import RemoteProvider
from tests.unit.conftest import MakeClient, Upstream, assert_error, spec

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            "strict": True,
        },
    }
]
SCHEMA = {
    "type": "json_schema",
    "json_schema": {"name": "city", "schema": {"type": "object", "properties": {"name": {"type": "string"}}}},
}


def mixed(make_client: MakeClient, upstream_url: str, **provider: Any) -> TestClient:
    """`mixed`: the local fake first, then the remote provider."""
    up = RemoteProvider(type="vllm", base_url=upstream_url, health_interval_s=0, max_retries=0, **provider)
    routes = MappingsFile.model_validate(
        {
            "exact_matches": {"mixed": {"chain": "local-then-remote"}},
            "fallback_chains": {"local-then-remote": [{"provider": "local", "model": "chat"}, {"provider": "up"}]},
        }
    )
    return make_client([spec("chat", ["fake"])], providers={"up": up}, routes=routes)


def ask(client: TestClient, **extra: Any) -> Any:
    body = {"model": "mixed", "messages": [{"role": "user", "content": "Weather in Paris?"}], **extra}
    return client.post("/v1/chat/completions", json=body)


def test_tools_skip_the_local_engine_and_reach_the_provider_exactly_as_sent(
    make_client: MakeClient, upstream: Upstream
) -> None:
    extra = {"tools": TOOLS, "tool_choice": "required", "parallel_tool_calls": False, "response_format": SCHEMA}
    response = ask(mixed(make_client, upstream.url), **extra, top_logprobs=3, logprobs=True, n=2, seed=7)
    assert response.status_code == 200, response.text
    assert response.headers["x-inferrelay-backend"] == "up"
    assert response.headers["x-inferrelay-attempts"] == "local/fake=unsupported"
    (sent,) = upstream.bodies
    assert sent == {
        "model": "mixed",
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        **extra,
        "top_logprobs": 3,
        "logprobs": True,
        "n": 2,
        "seed": 7,
    }


def test_a_plain_request_is_served_locally_first(make_client: MakeClient, upstream: Upstream) -> None:
    response = ask(mixed(make_client, upstream.url))
    assert response.headers["x-inferrelay-backend"] == "local/fake"
    assert upstream.bodies == []


def test_a_provider_that_refuses_a_field_is_skipped_and_the_400_names_both_steps(
    make_client: MakeClient, upstream: Upstream
) -> None:
    client = mixed(make_client, upstream.url, refuse_fields=["tools"])
    error = assert_error(ask(client, tools=TOOLS, tool_choice="required"), 400, "unsupported", "tools")
    assert "local/fake cannot honour tools" in error["message"]
    assert "provider 'up' refuses tools" in error["message"]
    assert upstream.bodies == []


def test_a_provider_drops_the_fields_it_is_told_to(make_client: MakeClient, upstream: Upstream) -> None:
    client = mixed(make_client, upstream.url, drop_fields=["parallel_tool_calls", "seed"])
    response = ask(client, tools=TOOLS, tool_choice="required", parallel_tool_calls=True, seed=3)
    assert response.status_code == 200
    assert "parallel_tool_calls" not in upstream.bodies[0]
    assert "seed" not in upstream.bodies[0]
    assert upstream.bodies[0]["tools"] == TOOLS


def test_a_tool_round_trip_history_is_valid_and_reaches_the_provider(
    make_client: MakeClient, upstream: Upstream
) -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"celsius": 21}'},
    ]
    response = ask(mixed(make_client, upstream.url), tools=TOOLS, tool_choice="required", messages=messages)
    assert response.status_code == 200, response.text
    assert upstream.bodies[0]["messages"] == messages


def test_tools_with_tool_choice_auto_are_served_locally_and_text_stays_text(
    make_client: MakeClient, upstream: Upstream
) -> None:
    """The fake engine echoes: no call in its output, so the answer is its text, finish_reason stop."""
    response = ask(mixed(make_client, upstream.url), tools=TOOLS)
    assert response.headers["x-inferrelay-backend"] == "local/fake"
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert choice["message"]["content"].startswith("echo:")
    assert upstream.bodies == []


def test_a_malformed_tool_or_choice_is_a_400_naming_it(make_client: MakeClient, upstream: Upstream) -> None:
    client = mixed(make_client, upstream.url)
    assert_error(ask(client, tools=[{"type": "function"}]), 400, "bad_request", "tools")
    named = {"type": "function", "function": {"name": "nope"}}
    assert_error(ask(client, tools=TOOLS, tool_choice=named), 400, "bad_request", "tool_choice")
