"""The model host (runtime/model_host.py): servers of `serve --workers` share one engine worker per model.

A real host and real onnx workers with the embedded MiniLM; each `start_shared_worker` call stands for one server
process attaching (the e2e test in tests/e2e/test_shared_models.py runs real server processes).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from inferrelay.config.embedded import MINILM
from inferrelay.config.schema import ModelSpec
from inferrelay.engines.base import EmbeddingModel, Engine
from inferrelay.engines.registry import EngineRegistry
from inferrelay.errors import ErrorKind, InferrelayError
from inferrelay.runtime.model_host import ModelHost
from inferrelay.runtime.shared_workers import start_shared_worker
from inferrelay.runtime.workers import WorkerCrashed, WorkerModel, start_worker
from tests.engine_here import engine_or_skip

TEXTS = ["a worker for the whole machine", "one copy of the weights", "several servers call it"]
BOUND_S = 30


@pytest.fixture
def host(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModelHost]:
    models = ModelHost()
    models.start()
    for name, value in models.environment().items():
        monkeypatch.setenv(name, value)
    yield models
    models.close()


@pytest.fixture(scope="module")
def onnx() -> Engine:
    return engine_or_skip("onnx")


def attach(onnx: Engine, home: Path) -> WorkerModel:
    model = start_shared_worker(onnx, MINILM, "cpu", home)
    assert isinstance(model, WorkerModel)
    assert isinstance(model, EmbeddingModel)
    return model


def gone(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    return not status.exists() or "zombie" in status.read_text()


def until_gone(pid: int) -> None:
    """A bound that detects a hang, not a timing assertion."""
    for _ in range(BOUND_S * 20):
        if gone(pid):
            return
        os.system("sleep 0.05")
    raise AssertionError(f"worker {pid} still running")


def test_two_servers_share_one_worker_which_answers_as_a_worker_of_its_own(
    host: ModelHost, onnx: Engine, test_home: Path
) -> None:
    first, second = attach(onnx, test_home), attach(onnx, test_home)
    assert first.worker.pid == second.worker.pid, "one worker for the machine"
    assert first.worker.servers() == 2
    assert second.held_bytes == first.held_bytes > 0, "the load's own measure, told to each server"
    own = start_worker(onnx, MINILM, "cpu", test_home)
    try:
        assert own.worker.pid != first.worker.pid
        reference = np.asarray(own.embed(TEXTS).vectors)  # type: ignore[attr-defined]
    finally:
        own.close()
    for model in (first, second):
        np.testing.assert_allclose(np.asarray(model.embed(TEXTS).vectors), reference, rtol=1e-5, atol=1e-6)  # type: ignore[attr-defined]

    pid = first.worker.pid
    first.close()
    assert second.worker.servers() == 1
    assert len(second.embed(TEXTS).vectors) == len(TEXTS), "one server letting go leaves it to the other"  # type: ignore[attr-defined]
    assert not gone(pid)
    second.close()
    until_gone(pid)  # the last one letting go closes it


def test_a_dead_shared_worker_fails_both_servers_and_is_started_again_once(
    host: ModelHost, onnx: Engine, test_home: Path
) -> None:
    first, second = attach(onnx, test_home), attach(onnx, test_home)
    pid = first.worker.pid
    os.kill(pid, signal.SIGKILL)
    for model in (first, second):
        with pytest.raises(InferrelayError) as caught:
            model.embed(TEXTS)  # type: ignore[attr-defined]
        assert caught.value.kind is ErrorKind.ENGINE_CRASHED
        assert "SIGKILL" in caught.value.message, caught.value.message
        assert not model.worker.alive
    first.close()
    second.close()
    again, and_again = attach(onnx, test_home), attach(onnx, test_home)
    try:
        assert again.worker.pid == and_again.worker.pid != pid, "one new worker for both"
        assert len(again.embed(TEXTS).vectors) == len(TEXTS)  # type: ignore[attr-defined]
    finally:
        again.close()
        and_again.close()


def test_a_load_that_fails_in_the_host_is_the_same_error_for_the_server(
    host: ModelHost, onnx: Engine, tmp_path: Path
) -> None:
    missing = MINILM.model_copy(update={"source": str(tmp_path / "nowhere")})
    with pytest.raises(InferrelayError) as caught:
        start_shared_worker(onnx, missing, "cpu", tmp_path)
    assert caught.value.kind in (ErrorKind.MODEL_LOAD_FAILED, ErrorKind.MODEL_NOT_FOUND)
    assert "nowhere" in caught.value.message, caught.value.message
    assert not list(Path(host.folder).glob("worker-*")), "no worker left behind"


def test_a_caller_without_the_key_is_turned_away(host: ModelHost) -> None:
    from multiprocessing import AuthenticationError
    from multiprocessing.connection import Client

    with pytest.raises(AuthenticationError):
        Client(host.address, "AF_UNIX", authkey=b"not the host's key")
    assert oct(Path(host.folder).stat().st_mode & 0o777) == "0o700"


def test_a_worker_that_dies_loading_names_its_signal_as_a_worker_of_its_own_would(
    host: ModelHost, tmp_path: Path
) -> None:
    """Fault injection: the fake engine kills its worker with SIGILL while loading (the AMX machine's crash)."""
    fake = EngineRegistry.discover().state("fake")
    assert fake is not None
    assert fake.engine is not None
    spec = ModelSpec(
        name="dies-loading",
        source="fake",
        capabilities=["embeddings"],
        engines=["fake"],
        engine_options={"fake": {"crash": "sigill", "fail_on": "load"}},
    )
    with pytest.raises(WorkerCrashed) as caught:
        start_shared_worker(fake.engine, spec, "cpu", tmp_path)
    assert caught.value.signal == "SIGILL"
    assert "SIGILL" in caught.value.message, caught.value.message
    assert not list(Path(host.folder).glob("worker-*")), "no worker left behind"
