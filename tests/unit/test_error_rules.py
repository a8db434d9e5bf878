"""Real failures from the real libraries, each classified into its kind with a hint that says what to do."""

from __future__ import annotations

import asyncio
import importlib
import json
import socket
from pathlib import Path

import pytest

from inferrelay.config.embedded import SMOLLM2
from inferrelay.config.sources import resolve_source
from inferrelay.errors import ErrorKind, InferrelayError, classify


def raised(action: object, *args: object, **kwargs: object) -> BaseException:
    try:
        action(*args, **kwargs)  # type: ignore[operator]
    except BaseException as exc:
        return exc
    raise AssertionError(f"{action} did not fail")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_torch_running_out_of_cpu_memory() -> None:
    torch = pytest.importorskip("torch")
    error = classify(raised(torch.empty, 2**60, dtype=torch.uint8))
    assert error.kind is ErrorKind.OUT_OF_MEMORY


def test_onnxruntime_given_a_file_that_is_not_a_graph(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"\x00garbage" * 100)
    error = classify(raised(ort.InferenceSession, str(bad)), loading=True)
    assert error.kind is ErrorKind.MODEL_LOAD_FAILED
    assert "inferrelay doctor PATH" in error.hint
    missing = classify(raised(ort.InferenceSession, str(tmp_path / "absent.onnx")), loading=True)
    assert missing.kind is ErrorKind.MODEL_LOAD_FAILED


def test_llama_cpp_given_a_truncated_gguf(tmp_path: Path) -> None:
    llama_cpp = pytest.importorskip("llama_cpp")
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(resolve_source(SMOLLM2.source).path.read_bytes()[:2_000_000])
    error = classify(raised(llama_cpp.Llama, model_path=str(cut), verbose=False), loading=True)
    assert error.kind is ErrorKind.MODEL_LOAD_FAILED
    assert error.hint.startswith("llama.cpp could not read the file")


def test_a_truncated_safetensors_file(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file, save_file

    whole = tmp_path / "model.safetensors"
    save_file({"w": torch.zeros(1000)}, str(whole))
    whole.write_bytes(whole.read_bytes()[:-100])
    error = classify(raised(load_file, str(whole)), loading=True)
    assert error.kind is ErrorKind.MODEL_LOAD_FAILED
    assert error.hint.startswith("A weight file is damaged or truncated")


def test_an_architecture_transformers_does_not_know(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "quantum-llama"}))
    error = classify(raised(transformers.AutoConfig.from_pretrained, str(tmp_path)), loading=True)
    assert error.kind is ErrorKind.MODEL_LOAD_FAILED
    assert "does not know the model's architecture" in error.hint


def test_a_missing_library_and_a_missing_file() -> None:
    missing = classify(raised(importlib.import_module, "vllm_not_here.engine"))
    assert missing.kind is ErrorKind.DEPENDENCY_MISSING
    assert missing.hint == "pip install vllm_not_here"
    no_file = classify(raised(open, "/nonexistent/model.gguf"), loading=True)
    assert no_file.kind is ErrorKind.MODEL_LOAD_FAILED
    assert "inferrelay doctor PATH" in no_file.hint


def test_a_chat_template_that_refuses_the_messages() -> None:
    jinja2 = pytest.importorskip("jinja2")
    template = jinja2.Environment().from_string("{% if messages[0].role != 'user' %}{{ fail() }}{% endif %}")

    def fail() -> None:
        raise jinja2.TemplateError("Conversation roles must alternate user/assistant/user/assistant")

    error = classify(raised(template.render, messages=[{"role": "assistant"}], fail=fail))
    assert error.kind is ErrorKind.BAD_REQUEST
    assert "chat template" in error.hint


def test_providers_unreachable_or_slow_through_httpx_and_aiohttp() -> None:
    httpx = pytest.importorskip("httpx")
    port = closed_port()
    assert classify(raised(httpx.get, f"http://127.0.0.1:{port}/v1/models")).kind is ErrorKind.TRANSIENT
    assert classify(httpx.ReadTimeout("read timed out")).kind is ErrorKind.TIMEOUT
    aiohttp = pytest.importorskip("aiohttp")

    async def fetch() -> None:
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/") as response:
            await response.read()

    assert classify(raised(asyncio.run, fetch())).kind is ErrorKind.TRANSIENT


def test_context_overflow_reported_by_an_engine() -> None:
    error = classify(ValueError("Requested tokens (4100) exceed context window of 4096"))
    assert error.kind is ErrorKind.CONTEXT_LENGTH


def test_an_unknown_exception_is_internal_and_names_its_type_for_the_count() -> None:
    class Strange(Exception):
        pass

    error = classify(Strange("what is this"))
    assert error.kind is ErrorKind.INTERNAL
    assert error.origin == f"{__name__}.{Strange.__qualname__}", "the app's observer counts unclassified errors by it"
    assert classify(ValueError("Requested tokens (4100) exceed context window of 4096")).origin is None
    assert classify(error) is error
    assert isinstance(error, InferrelayError)
