"""llama-cpp-python's own OpenAI server as an upstream nobody here wrote; killed mid-run under bounded load."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from inferrelay.config.embedded import SMOLLM2
from inferrelay.config.sources import resolve_source
from tests.conftest import FRANCE, free_port
from tests.references import llama_cpp_chat

pytestmark = pytest.mark.slow


@pytest.fixture
def peer(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    gguf = resolve_source(SMOLLM2.source).path
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", "smollm2"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--verbose", "False"]
    log = (tmp_path / "peer.log").open("w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/v1/models", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert process.poll() is None, (tmp_path / "peer.log").read_text()
        assert time.monotonic() < deadline, "llama_cpp.server did not start"
        time.sleep(0.3)
    yield url, process
    process.kill()
    process.wait()
    log.close()


@pytest.fixture
def front(peer: tuple[str, Any], start_server: Any, test_home: Path, tmp_path: Path) -> Any:
    config = tmp_path / "config"
    config.mkdir()
    (config / "providers.yaml").write_text(
        "providers:\n  cpp:\n    type: llama_cpp\n"
        f"    base_url: {peer[0]}/v1\n    health_interval_s: 0\n    max_retries: 1\n    models: [smollm2]\n"
    )
    (config / "model-mappings.yaml").write_text(
        "exact_matches:\n  peer-smol: {chain: peer-then-local}\n"
        "fallback_chains:\n  peer-then-local:\n"
        "    - {provider: cpp, model: smollm2}\n    - {provider: local, model: smollm2-135m-instruct}\n"
    )
    return start_server(test_home, "--config", str(config))


def peer_answers(peer_url: str, body: dict[str, Any], times: int = 2) -> list[str]:
    """The peer's own answers to `body`, asked directly. llama_cpp.server reuses the previous prompt's KV
    prefix, which may change the arithmetic: the first answer is computed from scratch, a repeat from the
    cache; from the second on, the same prompt meets the same cache and gets the same answer."""
    url = f"{peer_url}/v1/chat/completions"
    replies = [httpx.post(url, json={**body, "model": "smollm2"}, timeout=120) for _ in range(times)]
    return [str(r.json()["choices"][0]["message"]["content"]) for r in replies]


def test_the_peer_serves_through_inferrelay(front: Any, peer: tuple[str, Any]) -> None:
    _, repeated = peer_answers(peer[0], {"messages": FRANCE, "temperature": 0, "max_tokens": 30})
    client = openai.OpenAI(base_url=f"{front.url}/v1", api_key="unused", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="peer-smol", messages=FRANCE, temperature=0, max_tokens=30
    )
    assert raw.headers["x-inferrelay-backend"] == "cpp"
    answer = raw.parse()
    assert answer.model == "peer-smol"
    assert answer.choices[0].message.content == repeated, "the peer's own answer, passed through unchanged"
    chunks = list(
        client.chat.completions.create(model="peer-smol", messages=FRANCE, temperature=0, max_tokens=30, stream=True)
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == repeated


def test_killing_the_peer_mid_run_loses_no_request(front: Any, peer: tuple[str, Any]) -> None:
    """Plain requests: a stream already past its first token when the peer dies ends with an error event."""
    body = {"model": "peer-smol", "messages": FRANCE, "temperature": 0, "max_tokens": 12}
    _, repeated = peer_answers(peer[0], body)
    # What each backend answers: the peer its repeated-prompt answer; the local engine, which evaluates every
    # prompt from scratch, what a fresh llama-cpp-python answers.
    expected = {"cpp": repeated, "local/llamacpp": llama_cpp_chat(FRANCE, 12).text}

    def ask(index: int) -> httpx.Response:
        if index == 6:
            peer[1].kill()  # mid-run, while other requests are in flight
        return httpx.post(f"{front.url}/v1/chat/completions", json=body, timeout=120)

    with ThreadPoolExecutor(max_workers=4) as pool:
        responses = list(pool.map(ask, range(16)))
    assert [r.status_code for r in responses] == [200] * 16, [r.text for r in responses if r.status_code != 200]
    backends = [r.headers["x-inferrelay-backend"] for r in responses]
    assert "cpp" in backends
    assert backends[-1] == "local/llamacpp"
    answers = [(b, r.json()["choices"][0]["message"]["content"]) for b, r in zip(backends, responses, strict=True)]
    assert all(text == expected[backend] for backend, text in answers), (expected, answers)
