"""A third-party engine, installed by entry point like any plugin, brings its own facts (memory rule, precision
steps, formats, preference, build line): the memory estimate, the out-of-memory ladder, the default chain and
the doctor use them, and no table in the core names it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from inferrelay.capabilities import Capability
from inferrelay.config.embedded import SMOLLM2
from inferrelay.config.schema import ModelSpec, Settings
from inferrelay.config.sources import resolve_source
from inferrelay.doctor.report import diagnose
from inferrelay.engines.base import LoadedModel
from inferrelay.engines.fake import FakeEngine
from inferrelay.engines.memory_rule import DTYPE, MIB, EngineMemory
from inferrelay.engines.registry import ENTRY_POINT_GROUP, EngineRegistry, engine_class
from inferrelay.errors import ErrorKind, InferrelayError
from inferrelay.models.facts import ModelFacts, model_facts
from inferrelay.runtime.defaults import default_engines
from inferrelay.runtime.placement import estimate_for
from inferrelay.server.app import create_app

PLUGIN = "halfway"
CONTEXT = 512


class HalfwayEngine(FakeEngine):
    """Someone else's engine: answers as the fake does, but reads GGUF, holds weights in the dtype it runs in
    with a one-byte KV cache, and cannot load anything in float32 (it steps down to float16, then int8)."""

    name = PLUGIN
    reads = frozenset({"gguf"})
    memory = EngineMemory(DTYPE, DTYPE, 1, 7 * MIB, 3 * MIB)
    precision_steps = (("decoder", "float32", "float16"), ("decoder", "float16", "int8"))
    default_for = frozenset({("gguf", "decoder")})
    preference = 15  # after llama.cpp, before onnx and torch

    @classmethod
    def build(cls) -> str | None:
        return "halfway 1.0, generic x86-64"

    def load(self, model: ModelSpec, device: str, home: Path) -> LoadedModel:
        if model.dtype == "float32":
            raise InferrelayError(ErrorKind.OUT_OF_MEMORY, "float32 does not fit in this engine's arena")
        return super().load(model, device, home)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The plugin installed as pip would leave it: a distribution whose entry_points.txt names the class."""
    site = tmp_path_factory.mktemp("site-packages")
    dist = site / "halfway_engine-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: halfway-engine\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{PLUGIN} = {__name__}:HalfwayEngine\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(site))
        yield


@pytest.fixture(scope="module")
def engines(installed: None) -> EngineRegistry:
    return EngineRegistry.discover()


@pytest.fixture(scope="module")
def smollm2() -> ModelFacts:
    source = resolve_source(SMOLLM2.source)
    return model_facts(source.path, source.format)


def sizes(facts: ModelFacts, per_parameter: int) -> tuple[int, int]:
    """Weights and KV cache (one byte an element, the plugin's rule) for `facts` over CONTEXT tokens."""
    assert facts.parameters is not None
    assert facts.layers is not None
    assert facts.kv_heads is not None
    assert facts.head_dim is not None
    return facts.parameters * per_parameter, 2 * facts.layers * facts.kv_heads * facts.head_dim * CONTEXT


def test_discovery_finds_the_plugin_beside_the_built_ins(engines: EngineRegistry) -> None:
    assert {PLUGIN, "llamacpp", "onnx", "torch", "fake"} <= set(engines.names())
    state = engines.state(PLUGIN)
    assert state is not None
    assert isinstance(state.engine, HalfwayEngine)
    assert engine_class(PLUGIN) is HalfwayEngine


def test_the_ladder_steps_down_by_the_plugins_own_precisions(installed: None) -> None:
    found = engine_class(PLUGIN)
    assert found is HalfwayEngine
    assert found.lower_precision(False, "float32") == "float16"
    assert HalfwayEngine().lower_precision(False, "float16") == "int8"
    assert found.lower_precision(False, "int8") is None
    assert found.lower_precision(True, "float32") is None  # it declared no encoder steps


def test_the_memory_estimate_follows_the_plugins_rule(installed: None, smollm2: ModelFacts) -> None:
    spec = SMOLLM2.model_copy(update={"engines": [PLUGIN], "context_length": CONTEXT})
    for engine in (PLUGIN, HalfwayEngine()):
        estimate = estimate_for(spec, engine, "float16")
        assert estimate is not None
        assert (estimate.weights, estimate.kv_cache, estimate.overhead) == (*sizes(smollm2, 2), 7 * MIB)


def test_a_registration_without_engines_puts_the_plugin_by_its_preference(installed: None) -> None:
    assert default_engines("gguf", [Capability.CHAT]) == ["llamacpp", PLUGIN, "onnx", "torch"]
    assert PLUGIN not in default_engines("hf_folder", [Capability.CHAT])


def test_the_doctor_judges_and_sizes_the_plugin(engines: EngineRegistry, smollm2: ModelFacts) -> None:
    report = diagnose(smollm2.path, engines, [], context_length=CONTEXT)
    verdict = next(v for v in report.engines if v.engine == PLUGIN)
    assert (verdict.can_serve, verdict.build) == (True, "halfway 1.0, generic x86-64")
    fit = next(m for m in report.memory if m.engine == PLUGIN and m.device == "cpu")
    assert fit.needed == sum(sizes(smollm2, 4)) + 7 * MIB  # float32 on the CPU
    assert "fake" not in [v.engine for v in report.engines]  # it reads no files: nothing to say about one


def test_a_load_refused_for_memory_is_retried_in_the_plugins_lower_precision(installed: None, tmp_path: Path) -> None:
    spec = SMOLLM2.model_copy(update={"name": "m", "engines": [PLUGIN], "context_length": CONTEXT, "dtype": "auto"})
    registry = EngineRegistry({PLUGIN: HalfwayEngine()})
    with TestClient(create_app(Settings(models=[spec], home=tmp_path / "home"), registry)) as client:
        answer = client.post(
            "/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        )
        assert answer.status_code == 200, answer.text
        assert (
            answer.headers["x-inferrelay-remediation"] == f"local/{PLUGIN}:lower_precision(float32 -> float16, to load)"
        )
        [slot] = client.get("/api/v1/runtime/models/m").json()["loaded"]
    assert (slot["engine"], slot["dtype"]) == (PLUGIN, "float16")
    planned = estimate_for(spec, HalfwayEngine, "float16")  # the pool sized the load by the plugin's rule
    assert planned is not None
    assert slot["memory"]["estimated"] == planned.as_dict()
