"""Fallback for real: an engine fails the way it does for users, and the next one answers."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from inferrelay.config.embedded import MINILM, SMOLLM2
from inferrelay.config.sources import resolve_source
from inferrelay.engines.onnx_export import ENCODER_VERSION
from inferrelay.engines.registry import EngineRegistry
from tests.conftest import FRANCE
from tests.references import onnx_genai_chat

pytestmark = pytest.mark.slow


def chat(url: str, model: str = SMOLLM2.name) -> httpx.Response:
    body = {"model": model, "messages": FRANCE, "temperature": 0, "max_tokens": 30}
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=300)


def test_missing_llama_cpp_falls_back_to_onnx(start_server: Any, test_home: Path) -> None:
    server = start_server(test_home, block_modules=("llama_cpp",))
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model=SMOLLM2.name, messages=FRANCE, temperature=0, max_tokens=30
    )
    assert raw.headers["x-inferrelay-backend"] == "local/onnx"
    assert raw.headers["x-inferrelay-attempts"] == "local/llamacpp=dependency_missing"
    expected = onnx_genai_chat(test_home, FRANCE, 30)  # onnxruntime-genai's own answer on the export it served
    assert raw.parse().choices[0].message.content == expected.text
    assert raw.parse().choices[0].finish_reason == expected.finish_reason

    status = httpx.get(f"{server.url}/api/v1/engines/llamacpp").json()
    assert status["available"] is False
    assert "llama_cpp" in status["error"]
    assert "pip install 'inferrelay[llamacpp]'" in status["error"]
    assert "llama-cpp-python" in status["error"]
    assert status["last_failure"]["kind"] == "dependency_missing"
    assert status["last_failure"]["model"] == SMOLLM2.name
    others = {e["name"]: e for e in httpx.get(f"{server.url}/api/v1/engines").json()["engines"]}
    assert others["onnx"]["available"] is True
    assert others["onnx"]["last_failure"] is None


def test_streaming_falls_back_before_the_first_token(start_server: Any, test_home: Path) -> None:
    server = start_server(test_home, block_modules=("llama_cpp",))
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    with client.chat.completions.with_streaming_response.create(
        model=SMOLLM2.name, messages=FRANCE, temperature=0, max_tokens=30, stream=True
    ) as response:
        assert response.headers["x-inferrelay-backend"] == "local/onnx"
        text = "".join(c.choices[0].delta.content or "" for c in response.parse() if c.choices)
    assert text == onnx_genai_chat(test_home, FRANCE, 30).text


def test_corrupt_onnx_export_falls_back_to_torch(start_server: Any, test_home: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    digest = resolve_source(MINILM.source).digest()
    export = f"onnx-encoder-{ENCODER_VERSION}-fp32-{digest}"
    onnx = EngineRegistry.discover().state("onnx")
    assert onnx is not None
    assert onnx.engine is not None
    onnx.engine.load(MINILM, "cpu", test_home)  # builds the export once if this run has not yet
    shutil.copytree(test_home / "cache" / export, home / "cache" / export)
    model_file = home / "cache" / export / "model.onnx"
    model_file.write_bytes(model_file.read_bytes()[:1000])  # a damaged cache file, as after a full disk

    server = start_server(home)
    response = httpx.post(f"{server.url}/v1/embeddings", json={"model": MINILM.name, "input": ["hello"]}, timeout=300)
    assert response.status_code == 200, response.text
    assert response.headers["x-inferrelay-backend"] == "local/torch"
    assert response.headers["x-inferrelay-attempts"] == "local/onnx=model_load_failed"
    assert len(response.json()["data"][0]["embedding"]) == 384
    status = httpx.get(f"{server.url}/api/v1/engines/onnx").json()
    assert status["available"] is True, "the library is fine; the model file is not"
    assert status["last_failure"]["kind"] == "model_load_failed"
    assert "model.onnx" in status["last_failure"]["reason"]


def _config(tmp_path: Path, text: str) -> Path:
    folder = tmp_path / "config"
    folder.mkdir()
    (folder / "model-mappings.yaml").write_text(text)
    return folder


def test_every_engine_failing_is_a_503_listing_each(start_server: Any, test_home: Path, tmp_path: Path) -> None:
    gguf = resolve_source(SMOLLM2.source).path
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(gguf.read_bytes()[: 4 << 20])  # an interrupted download
    config = _config(
        tmp_path,
        f"models:\n  broken:\n    source: {truncated}\n    capabilities: [chat]\n    engines: [llamacpp, torch]\n",
    )
    server = start_server(tmp_path / "home", "--config", str(config))
    response = chat(server.url, "broken")
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "all_backends_failed"
    assert "local/llamacpp: model_load_failed" in error["message"]
    assert "local/torch: model_load_failed" in error["message"]
    assert response.headers["x-inferrelay-attempts"] == "local/llamacpp=model_load_failed,local/torch=model_load_failed"


def test_fallback_switched_off_answers_with_the_first_failure(
    start_server: Any, test_home: Path, tmp_path: Path
) -> None:
    config = _config(tmp_path, "fallback: false\n")
    server = start_server(test_home, "--config", str(config), block_modules=("llama_cpp",))
    response = chat(server.url)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "dependency_missing"
    assert response.headers["x-inferrelay-attempts"] == "local/llamacpp=dependency_missing"


def test_a_broken_config_is_refused_with_file_and_key(tmp_path: Path) -> None:
    import subprocess
    import sys

    config = _config(tmp_path, "models:\n  mine:\n    source: /x.gguf\n    capabilities: [chat]\n    engines: []\n")
    done = subprocess.run(
        [sys.executable, "-m", "inferrelay.cli", "serve", "--config", str(config), "--port", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "model-mappings.yaml:5: models.mine.engines" in done.stderr
    assert "Traceback" not in done.stderr
