"""Hostile requests against a real server (issue 20): each refused with OpenAI's 4xx at once, the next one served.

The client timeout (TIMELY) is the hang detector: before the door, these requests took minutes (a 50 MB message
was counted to 13M tokens first; 100,000 messages or 4 MB of stop strings got no answer in 300 s).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import FRANCE

pytestmark = pytest.mark.slow

CHAT = "smollm2-135m-instruct"
EMBED = "all-minilm-l6-v2"
TIMELY = httpx.Timeout(15.0)
"""For the refusals: far more than one takes (milliseconds), far less than the minutes an unguarded request took.
The normal requests after them get minutes: a busy machine may be slow to answer, which is not a hang."""


@pytest.fixture(scope="module")
def server(test_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from tests.conftest import ServerProcess

    process = ServerProcess(test_home, log=tmp_path_factory.mktemp("logs") / "server.log")
    with httpx.Client(base_url=process.url, timeout=300) as warm:  # both models loaded before the timed requests
        chat = {"model": CHAT, "messages": FRANCE, "max_tokens": 2, "temperature": 0}
        assert warm.post("/v1/chat/completions", json=chat).status_code == 200
        assert warm.post("/v1/embeddings", json={"model": EMBED, "input": "warm"}).status_code == 200
    yield process
    process.stop()


@pytest.fixture(scope="module")
def client(server: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=TIMELY)


@pytest.fixture(scope="module")
def patient(server: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=300)


def post_raw(server: Any, path: str, body: str) -> httpx.Response:
    """The body sent as written: JSON's \\ud800 escapes reach the server as they are."""
    with httpx.Client(base_url=server.url, timeout=TIMELY) as http:
        return http.post(path, content=body.encode(), headers={"content-type": "application/json"})


def assert_refused(response: httpx.Response, status: int, code: str, param: str | None) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert (error["code"], error["param"]) == (code, param)
    assert error["message"]


def assert_still_serving(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(model=CHAT, messages=FRANCE, max_tokens=8, temperature=0)
    assert answer.choices[0].message.content
    vectors = client.embeddings.create(model=EMBED, input=["still here"])
    assert len(vectors.data[0].embedding) == 384


def test_a_50_mb_message_is_refused_413_without_reading_it(
    server: Any, client: openai.OpenAI, patient: openai.OpenAI
) -> None:
    body = json.dumps({"model": CHAT, "messages": [{"role": "user", "content": "a" * 50_000_000}]})
    assert_refused(post_raw(server, "/v1/chat/completions", body), 413, "request_too_large", None)
    with pytest.raises(openai.APIStatusError) as refused:  # as the official client sees it
        client.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": "a" * 50_000_000}])
    assert refused.value.status_code == 413
    assert_still_serving(patient)


def test_a_message_past_the_text_limit_is_a_400(server: Any, patient: openai.OpenAI) -> None:
    body = json.dumps({"model": CHAT, "messages": [{"role": "user", "content": "a " * 2_500_000}]})
    assert_refused(post_raw(server, "/v1/chat/completions", body), 400, "request_too_large", None)
    assert_still_serving(patient)


@pytest.mark.parametrize("route", ["chat", "completion"])
def test_a_prompt_far_past_the_context_is_refused_without_counting_it(
    client: openai.OpenAI, patient: openai.OpenAI, route: str
) -> None:
    text = "a " * 1_900_000  # under the text limit; about 1.9M tokens, counted in seconds
    send = {
        "chat": lambda: client.chat.completions.create(
            model=CHAT, messages=[{"role": "user", "content": text}], max_tokens=4
        ),
        "completion": lambda: client.completions.create(model=CHAT, prompt=text, max_tokens=4),
    }[route]
    with pytest.raises(openai.BadRequestError) as refused:
        send()
    assert refused.value.code == "context_length_exceeded"
    assert "at least" in refused.value.message
    assert_still_serving(patient)


def test_100000_messages_are_refused(client: openai.OpenAI, patient: openai.OpenAI) -> None:
    messages: Any = [{"role": "user", "content": "hi"}] * 100_000
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model=CHAT, messages=messages, max_tokens=4)
    assert (refused.value.code, refused.value.param) == ("array_above_max_length", "messages")
    assert_still_serving(patient)


def test_megabyte_stop_strings_are_refused(client: openai.OpenAI, patient: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model=CHAT, messages=FRANCE, stop=["x" * 1_000_000] * 4, max_tokens=4)
    assert (refused.value.code, refused.value.param) == ("string_above_max_length", "stop.0")
    with pytest.raises(openai.BadRequestError) as too_many:
        client.completions.create(model=CHAT, prompt="Paris is", stop=["a", "b", "c", "d", "e"], max_tokens=4)
    assert (too_many.value.code, too_many.value.param) == ("array_above_max_length", "stop")
    assert_still_serving(patient)


def test_embedding_inputs_past_their_count_are_refused(client: openai.OpenAI, patient: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.embeddings.create(model=EMBED, input=["a"] * 2049)
    assert (refused.value.code, refused.value.param) == ("array_above_max_length", "input")
    assert_still_serving(patient)


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/chat/completions", {"model": CHAT, "messages": [{"role": "user", "content": "hi \ud800"}]},
         "messages.0.content"),
        ("/v1/completions", {"model": CHAT, "prompt": "Paris \ud800 is", "max_tokens": 4}, "prompt"),
        ("/v1/embeddings", {"model": EMBED, "input": "\udc00"}, "input"),
        ("/v1/embeddings", {"model": EMBED, "input": ["fine", "not \udbff fine"]}, "input.1"),
        ("/v1/responses", {"model": CHAT, "input": "hi", "instructions": "\ud800"}, "instructions"),
    ],
)  # fmt: skip
def test_lone_surrogates_are_a_400_naming_the_field(
    server: Any, patient: openai.OpenAI, path: str, body: dict[str, Any], param: str
) -> None:
    text = json.dumps(body)  # ensure_ascii: the surrogate goes as the escape \ud800, as a hostile caller sends it
    assert "\\ud" in text or "\\udc" in text
    assert_refused(post_raw(server, path, text), 400, "invalid_unicode", param)
    assert_still_serving(patient)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


MEMORY_BOUND_MB = 150
"""What the server's process may keep after the hostile requests below: before the door, one 50 MB message left
it 594 MB larger, and 2,048 long embeddings inputs 443 MB; a refused request should keep next to nothing."""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the server's memory from /proc")
def test_the_server_keeps_no_memory_from_hostile_requests(server: Any, client: openai.OpenAI) -> None:
    before = rss_mb(server.process.pid)
    big = json.dumps({"model": CHAT, "messages": [{"role": "user", "content": "a" * (50 * 2**20)}]})
    many = json.dumps({"model": CHAT, "messages": [{"role": "user", "content": "hi"}] * 100_000})
    stops = json.dumps({"model": CHAT, "messages": FRANCE, "stop": ["x" * 2**20] * 4})
    long_inputs = json.dumps({"model": EMBED, "input": ["word " * 200] * 4096})
    surrogate = '{"model": "%s", "prompt": "bad \\ud800 text"}' % CHAT  # noqa: UP031 - the escape must stay as written
    for _ in range(3):
        for path, body in (
            ("/v1/chat/completions", big), ("/v1/chat/completions", many), ("/v1/chat/completions", stops),
            ("/v1/embeddings", long_inputs), ("/v1/completions", surrogate),
        ):  # fmt: skip
            response = post_raw(server, path, body)
            assert 400 <= response.status_code < 500, (path, response.status_code)
    after = rss_mb(server.process.pid)
    assert after - before < MEMORY_BOUND_MB, f"the server grew from {before:.0f} MB to {after:.0f} MB"
    assert_still_serving(client)
