"""A deterministic engine for users' own tests and for fault injection.

Options (a model's `engine_options.fake`): `latency_ms` per token,
`fail_kind` (an error kind) with `fail_rate` (0..1) and `fail_on`
("load", "request", or "stream": after the first token), `fail_devices` (fail only when placed on
one of these, e.g. ["cuda"], to rehearse a GPU running out of memory on a machine without one),
`dimensions` of its embeddings, and `seed` for the failure draws.

`crash` ("sigsegv", "sigill", "sigabrt", "sigkill" or "exit") makes a failure
a real death of the process instead of an error: the signal is sent to the
process itself (or it exits at once with code 3), at the stage `fail_on`
names, at the rate `fail_rate`. Crashes need the fake to run in a worker
process (`isolation: process` among its options); in the server's own
process the load is refused.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from inferrelay.config.schema import ModelSpec
from inferrelay.config.strict import Strict
from inferrelay.engines.base import (
    Capability,
    EmbeddingModel,
    Embeddings,
    Engine,
    GenerationRequest,
    LoadedModel,
    ProbeResult,
    Sampling,
    TokenTextModel,
)
from inferrelay.engines.decoding import check_input_lengths
from inferrelay.engines.memory_rule import EngineMemory
from inferrelay.errors import ErrorKind, InferrelayError


class FakeOptions(Strict):
    latency_ms: float = Field(default=0.0, ge=0)
    fail_kind: ErrorKind | None = None
    fail_rate: float = Field(default=1.0, ge=0, le=1)
    fail_on: Literal["load", "request", "stream"] = "request"
    fail_devices: list[str] | None = None
    dimensions: int = Field(default=384, gt=0)
    seed: int = 0
    crash: Literal["sigsegv", "sigill", "sigabrt", "sigkill", "exit"] | None = None


CRASH_SIGNALS = {
    "sigsegv": signal.SIGSEGV, "sigill": signal.SIGILL, "sigabrt": signal.SIGABRT, "sigkill": signal.SIGKILL,
}  # fmt: skip


class FaultInjector:
    def __init__(self, options: FakeOptions, device: str) -> None:
        self._options = options
        self._draws = random.Random(options.seed)
        self._device = device

    def maybe_fail(self, stage: str) -> None:
        options = self._options
        kind = options.fail_kind
        if (kind is None and options.crash is None) or stage != options.fail_on:
            return
        devices = options.fail_devices
        if devices is not None and self._device.split(":")[0] not in devices:
            return
        if self._draws.random() < options.fail_rate:
            if options.crash is not None:
                _die(options.crash)
            assert kind is not None
            raise InferrelayError(kind, f"fake engine: injected {kind.value} at {stage}")


def _die(how: str) -> None:
    """A real death, as native code dies: the kernel delivers the signal; no Python handler runs."""
    if how == "exit":
        os._exit(3)
    signal.signal(CRASH_SIGNALS[how], signal.SIG_DFL)
    os.kill(os.getpid(), CRASH_SIGNALS[how])
    time.sleep(10)  # the signal is delivered before this returns


class FakeEngine(Engine):
    name = "fake"
    capabilities = frozenset({Capability.CHAT, Capability.COMPLETION, Capability.EMBEDDINGS})
    isolation = "in_process"  # pure Python; a model whose fake is told to crash asks for a worker
    memory = EngineMemory(0, 0, 0, 0, 0)  # holds nothing worth counting

    def probe(self) -> ProbeResult:
        return ProbeResult(True, "ok")

    def smoke_test(self, model: LoadedModel) -> None:
        """None: the fake's faults are the user's to place; a smoke run would draw them."""

    def load(self, model: ModelSpec, device: str, home: Path) -> LoadedModel:
        options = FakeOptions.model_validate(model.engine_options.get("fake", {}))
        if options.crash is not None and not os.environ.get("INFERRELAY_WORKER"):
            raise InferrelayError(
                ErrorKind.MODEL_LOAD_FAILED,
                f"fake engine: crash {options.crash!r} would kill the server's own process",
                hint="add isolation: process to engine_options.fake, so the fake runs in a worker process",
            )
        faults = FaultInjector(options, device)
        faults.maybe_fail("load")
        if model.is_encoder:
            return FakeEncoder(options, faults, model.context_length)
        return FakeDecoder(options, faults, model.context_length)


class FakeDecoder(TokenTextModel):
    """Answers with the words of the last message, echoed; one word is one token."""

    engine_name = "fake"

    def __init__(self, options: FakeOptions, faults: FaultInjector, context_length: int) -> None:
        self._options = options
        self._faults = faults
        self._words: dict[int, str] = {}
        self._ids: dict[str, int] = {}
        self.context_length = context_length

    def encode(self, request: GenerationRequest) -> list[int]:
        self._faults.maybe_fail("request")
        text = request.messages[-1]["content"] if request.messages else request.prompt or ""
        return [self._id(word) for word in text.split()]

    def generate_ids(self, ids: list[int], max_new: int, sampling: Sampling) -> Iterator[int]:
        for position, token in enumerate([self._id("echo:"), *ids][:max_new]):
            if position == 1:
                self._faults.maybe_fail("stream")
            time.sleep(self._options.latency_ms / 1000)
            yield token

    def detokenize(self, ids: list[int]) -> str:
        return " ".join(self._words[i] for i in ids)

    def _id(self, word: str) -> int:
        if word not in self._ids:
            self._ids[word] = len(self._ids)
            self._words[self._ids[word]] = word
        return self._ids[word]


class FakeEncoder(EmbeddingModel):
    """A unit vector seeded by each text's hash: equal texts, equal vectors."""

    engine_name = "fake"

    def __init__(self, options: FakeOptions, faults: FaultInjector, context_length: int) -> None:
        self._options = options
        self._faults = faults
        self.context_length = context_length

    def embed(self, texts: list[str], truncate: bool = True) -> Embeddings:
        """A word is a token; truncated, a text is its first context_length words."""
        self._faults.maybe_fail("request")
        if truncate:
            texts = [
                " ".join(t.split()[: self.context_length]) if len(t.split()) > self.context_length else t for t in texts
            ]
        lengths = [len(t.split()) for t in texts]
        check_input_lengths(lengths, self.context_length)
        time.sleep(self._options.latency_ms / 1000)
        vectors = np.stack([_unit_vector(t, self._options.dimensions) for t in texts])
        return Embeddings(vectors, sum(lengths))


def _unit_vector(text: str, dimensions: int) -> Any:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    vector = np.random.default_rng(seed).standard_normal(dimensions).astype(np.float32)
    return vector / np.linalg.norm(vector)
