"""providers.yaml and model-mappings.yaml: one test per kind of mistake, each named with file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from inferrelay.config.loading import MAPPINGS_FILE, PROVIDERS_FILE, ConfigError, load_settings
from inferrelay.config.providers import RemoteProvider
from tests.conftest import REPO

VLLM = "providers:\n  gpu:\n    type: vllm\n    base_url: http://127.0.0.1:8001/v1\n    models: [qwen]\n"


def problems_of(tmp_path: Path, mappings: str = "", providers: str | None = None) -> list[str]:
    folder = tmp_path / "config"
    folder.mkdir(exist_ok=True)
    (folder / MAPPINGS_FILE).write_text(mappings)
    if providers is not None:
        (folder / PROVIDERS_FILE).write_text(providers)
    with pytest.raises(ConfigError) as caught:
        load_settings(folder, tmp_path)
    return caught.value.problems


@pytest.mark.parametrize(
    ("providers", "expected"),
    [
        pytest.param(
            "providers:\n  gpu:\n    type: vllm\n    base_url: ftp://x\n",
            "providers.yaml:4: providers.gpu.base_url: base_url must start with http",
            id="bad-url",
        ),
        pytest.param(
            VLLM + "    colour: red\n", "providers.yaml:6: providers.gpu.colour: unknown key", id="unknown-key"
        ),
        pytest.param("providers:\n  x:\n    type: triton\n", "providers.yaml:2: providers.x: Input tag", id="bad-type"),
        pytest.param(
            VLLM + "    rate_limits: {rpm: -1}\n",
            "providers.yaml:6: providers.gpu.rate_limits.rpm: Input should be greater than 0",
            id="negative-rpm",
        ),
        pytest.param(
            VLLM + "    health_endpoint: health\n",
            "providers.yaml:6: providers.gpu.health_endpoint: health_endpoint is a path",
            id="health-not-a-path",
        ),
        pytest.param("- a list\n", "providers.yaml:1: (top level): must be a mapping", id="not-a-mapping"),
        pytest.param("providers: {a: [\n", "providers.yaml:2: not valid YAML", id="bad-yaml"),
    ],
)
def test_providers_mistakes(tmp_path: Path, providers: str, expected: str) -> None:
    problems = problems_of(tmp_path, providers=providers)
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize(
    ("mappings", "expected"),
    [
        pytest.param(
            "exact_matches:\n  a: {provider: nowhere}\n",
            "model-mappings.yaml:2: exact_matches.a.provider: unknown provider 'nowhere'",
            id="unknown-provider",
        ),
        pytest.param(
            "exact_matches:\n  a: {provider: local, model: nope}\n",
            "model-mappings.yaml:2: exact_matches.a.model: no local model 'nope'",
            id="unknown-local-model",
        ),
        pytest.param(
            "exact_matches:\n  a: {provider: gpu, model: llama}\n",
            "model-mappings.yaml:2: exact_matches.a.model: provider 'gpu' does not list model 'llama'",
            id="model-not-on-provider",
        ),
        pytest.param(
            "capabilities:\n  chat: {chain: missing}\n",
            "model-mappings.yaml:2: capabilities.chat.chain: unknown fallback chain 'missing'",
            id="unknown-chain",
        ),
        pytest.param(
            "fallback_chains:\n  c:\n    - {group: g}\n",
            "model-mappings.yaml:3: fallback_chains.c.0.group: unknown load-balancing group 'g'",
            id="unknown-group",
        ),
        pytest.param(
            "fallback_chains:\n  a:\n    - {chain: b}\n  b:\n    - {chain: a}\n",
            "model-mappings.yaml:2: fallback_chains.a: fallback chains form a cycle: a -> b -> a",
            id="cycle",
        ),
        pytest.param(
            "fallback_chains:\n  a:\n    - {chain: a}\n",
            "model-mappings.yaml:2: fallback_chains.a: fallback chains form a cycle: a -> a",
            id="self-cycle",
        ),
        pytest.param(
            "patterns:\n  - pattern: '([x'\n    provider: local\n",
            "model-mappings.yaml:2: patterns.0.pattern: not a valid regular expression",
            id="bad-pattern",
        ),
        pytest.param(
            "capabilities:\n  vision: {provider: local}\n",
            "model-mappings.yaml:2: capabilities.vision",
            id="unknown-capability",
        ),
        pytest.param(
            "exact_matches:\n  a: {provider: local, chain: c}\n",
            "model-mappings.yaml:2: exact_matches.a: give exactly one of provider, chain or group",
            id="two-targets",
        ),
        pytest.param(
            "load_balancing:\n  g:\n    strategy: random\n    members: [{provider: gpu}]\n",
            "model-mappings.yaml:3: load_balancing.g.strategy: Input should be",
            id="unknown-strategy",
        ),
        pytest.param(
            "load_balancing:\n  g:\n    members:\n      - {provider: elsewhere}\n",
            "model-mappings.yaml:4: load_balancing.g.members.0.provider: unknown provider 'elsewhere'",
            id="member-unknown-provider",
        ),
        pytest.param(
            "fallback_chains:\n  c: []\n",
            "model-mappings.yaml:2: fallback_chains.c: List should have at least 1 item",
            id="empty-chain",
        ),
        pytest.param(
            "runtime:\n  memory_budget: {gpu: 4GiB}\n",
            "model-mappings.yaml:2: runtime.memory_budget: unknown device 'gpu': use cpu, cuda, mps",
            id="budget-unknown-device",
        ),
        pytest.param(
            "runtime:\n  memory_budget:\n    cpu: lots\n",
            "model-mappings.yaml:3: runtime.memory_budget.cpu: 'lots' is not a size",
            id="budget-not-a-size",
        ),
        pytest.param(
            "runtime:\n  keep_alive: soon\n",
            "model-mappings.yaml:2: runtime.keep_alive: 'soon' is not a duration",
            id="keep-alive-not-a-duration",
        ),
        pytest.param(
            "models:\n  smollm2-135m-instruct:\n    keep_alive: 5 minutes\n",
            "model-mappings.yaml:3: models.smollm2-135m-instruct.keep_alive: '5 minutes' is not a duration",
            id="model-keep-alive",
        ),
    ],
)
def test_mappings_mistakes(tmp_path: Path, mappings: str, expected: str) -> None:
    problems = problems_of(tmp_path, mappings, providers=VLLM)
    assert any(expected in p for p in problems), problems


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    mappings = "exact_matches:\n  a: {provider: x}\n  b: {provider: y}\n"
    assert len(problems_of(tmp_path, mappings)) == 2


def test_complete_example_validates_with_every_concept(tmp_path: Path) -> None:
    settings = load_settings(REPO / "examples" / "full", tmp_path)
    assert {"local", "gpu-box", "workstation", "cpp-a", "cpp-b"} == set(settings.providers)
    gpu = settings.providers["gpu-box"]
    assert isinstance(gpu, RemoteProvider)
    assert (gpu.type, gpu.api_key_env, gpu.rate_limits.rpm) == ("vllm", "GPU_BOX_API_KEY", 600)
    routes = settings.routes
    assert routes.exact_matches["gpt-4o-mini"].chain == "chat-default"
    assert [p.pattern for p in routes.patterns] == ["^llama3", "^text-embedding-"]
    assert routes.load_balancing["smollm2-pool"].strategy == "least_busy"
    assert len(routes.fallback_chains["chat-default"]) == 3
