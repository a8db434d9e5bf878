"""errors.py: classify(), the kind policies and the OpenAI error body."""

from __future__ import annotations

import pytest

from inferrelay.errors import (
    POLICIES,
    ErrorKind,
    InferrelayError,
    bad_request,
    classify,
    dependency_missing,
)

CALLER_KINDS = [ErrorKind.BAD_REQUEST, ErrorKind.CONTEXT_LENGTH, ErrorKind.MODEL_NOT_FOUND, ErrorKind.NOT_FOUND]
ENGINE_KINDS = [
    ErrorKind.DEPENDENCY_MISSING,
    ErrorKind.ENGINE_UNAVAILABLE,
    ErrorKind.MODEL_LOAD_FAILED,
    ErrorKind.OUT_OF_MEMORY,
    ErrorKind.TRANSIENT,
    ErrorKind.TIMEOUT,
    ErrorKind.UPSTREAM_ERROR,
    ErrorKind.INTERNAL,
]


@pytest.mark.parametrize(
    "exc",
    [
        MemoryError(),
        RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        RuntimeError("ggml: failed to allocate buffer"),
        OSError("Cannot allocate memory"),
    ],
)
@pytest.mark.parametrize("loading", [False, True])
def test_memory_failures_are_out_of_memory(exc: BaseException, loading: bool) -> None:
    error = classify(exc, loading=loading)
    assert error.kind is ErrorKind.OUT_OF_MEMORY
    assert error.status == 503
    assert type(exc).__name__ in error.message


@pytest.mark.parametrize("loading", [False, True])
def test_missing_module_is_dependency_missing_with_pip_hint(loading: bool) -> None:
    error = classify(ModuleNotFoundError("No module named 'llama_cpp'", name="llama_cpp"), loading=loading)
    assert error.kind is ErrorKind.DEPENDENCY_MISSING
    assert error.hint == "pip install llama_cpp"
    assert "llama_cpp" in error.message


def test_plain_import_error_gets_a_hint_without_a_made_up_package() -> None:
    error = classify(ImportError("cannot import name 'x'"))
    assert error.kind is ErrorKind.DEPENDENCY_MISSING
    assert "cannot import" not in error.hint


def test_timeout_error() -> None:
    error = classify(TimeoutError("took too long"))
    assert error.kind is ErrorKind.TIMEOUT
    assert error.status == 504


def test_unknown_while_loading_is_model_load_failed() -> None:
    error = classify(ValueError("unexpected tensor shape"), loading=True)
    assert error.kind is ErrorKind.MODEL_LOAD_FAILED
    assert error.message == "ValueError: unexpected tensor shape"


def test_unknown_otherwise_is_internal() -> None:
    error = classify(KeyError("x"))
    assert error.kind is ErrorKind.INTERNAL
    assert error.status == 500
    assert "KeyError" in error.message


def test_classified_errors_pass_through_unchanged() -> None:
    original = InferrelayError(ErrorKind.TRANSIENT, "try again", param="x")
    assert classify(original) is original
    assert classify(original, loading=True) is original


def test_every_kind_has_a_policy() -> None:
    assert set(POLICIES) == set(ErrorKind)
    for kind in ErrorKind:
        assert kind.policy.hint
        assert kind.policy.error_type in {"invalid_request_error", "server_error", "rate_limit_error"}


@pytest.mark.parametrize("kind", CALLER_KINDS)
def test_caller_errors_are_4xx_and_never_fall_back(kind: ErrorKind) -> None:
    assert 400 <= kind.policy.status < 500
    assert kind.policy.error_type == "invalid_request_error"
    assert kind.policy.falls_back is False


@pytest.mark.parametrize("kind", ENGINE_KINDS)
def test_engine_failures_are_5xx_and_fall_back(kind: ErrorKind) -> None:
    assert kind.policy.status >= 500
    assert kind.policy.error_type == "server_error"
    assert kind.policy.falls_back is True


def test_specific_statuses() -> None:
    assert ErrorKind.BAD_REQUEST.policy.status == 400
    assert ErrorKind.CONTEXT_LENGTH.policy.status == 400
    assert ErrorKind.MODEL_NOT_FOUND.policy.status == 404
    assert ErrorKind.RATE_LIMITED.policy.status == 429
    assert ErrorKind.UPSTREAM_ERROR.policy.status == 502
    assert ErrorKind.ALL_BACKENDS_FAILED.policy.status == 503
    assert ErrorKind.ALL_BACKENDS_FAILED.policy.falls_back is False


def test_body_is_openai_shaped() -> None:
    error = InferrelayError(ErrorKind.CONTEXT_LENGTH, "too long", param="messages")
    body = error.body()
    assert list(body) == ["error"]
    body_error = body["error"]
    assert {"message", "type", "param", "code"} <= set(body_error)
    assert body_error["message"] == "too long (context_length_exceeded)", "LangChain reads the code in the text"
    assert body_error["type"] == "invalid_request_error"
    assert body_error["param"] == "messages"
    assert body_error["code"] == "context_length_exceeded", "OpenAI's code, which LangChain and others look for"
    assert body_error["hint"] == ErrorKind.CONTEXT_LENGTH.policy.hint


def test_body_of_a_server_error_has_null_param() -> None:
    body = InferrelayError(ErrorKind.OUT_OF_MEMORY, "oom").body()["error"]
    assert body["param"] is None
    assert body["type"] == "server_error"
    assert body["code"] == "out_of_memory"


def test_explicit_hint_overrides_the_default() -> None:
    assert InferrelayError(ErrorKind.TRANSIENT, "x", hint="wait").hint == "wait"
    assert InferrelayError(ErrorKind.TRANSIENT, "x").hint == ErrorKind.TRANSIENT.policy.hint


def test_helpers() -> None:
    error = bad_request("temperature: too hot", param="temperature")
    assert (error.kind, error.param, error.status) == (ErrorKind.BAD_REQUEST, "temperature", 400)
    missing = dependency_missing("onnxruntime", "inferrelay[onnx]", "No module named 'onnxruntime'")
    assert missing.kind is ErrorKind.DEPENDENCY_MISSING
    assert missing.hint == "pip install inferrelay[onnx]"
    assert "onnxruntime" in missing.message
    assert "No module named" in missing.message
    assert str(missing) == missing.message
