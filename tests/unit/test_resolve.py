"""Name resolution: exact match, first pattern, capability, then local models; groups rotate."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from inferrelay.config.loading import load_settings
from inferrelay.config.schema import Settings
from inferrelay.engines.base import Capability
from inferrelay.errors import ErrorKind, InferrelayError
from inferrelay.routing.resolve import Resolver, Step
from inferrelay.routing.stats import DeploymentBook
from tests.conftest import REPO


@pytest.fixture
def resolver(tmp_path: Path) -> Resolver:
    return Resolver(load_settings(REPO / "examples" / "full", tmp_path))


def test_exact_match_to_a_chain_expands_every_step(resolver: Resolver) -> None:
    steps = resolver.resolve("gpt-4o-mini", Capability.CHAT)
    assert steps[0] == Step("gpu-box", "qwen2.5-7b-instruct")
    assert {steps[1], steps[2]} == {Step("cpp-a", "smollm2"), Step("cpp-b", "smollm2")}
    assert steps[3] == Step("local", "smollm2-135m-instruct")


def test_first_matching_pattern_wins(resolver: Resolver) -> None:
    assert resolver.resolve("llama3.1:8b", Capability.CHAT) == [Step("workstation", "llama3.2:3b")]
    assert resolver.resolve("text-embedding-3-small", Capability.EMBEDDINGS) == [Step("local", "all-minilm-l6-v2")]


def test_capability_routes_names_nothing_else_claims(resolver: Resolver) -> None:
    assert resolver.resolve("some-embedder", Capability.EMBEDDINGS) == [Step("local", "all-minilm-l6-v2")]
    assert resolver.resolve("anything", Capability.CHAT)[0] == Step("gpu-box", "qwen2.5-7b-instruct")


def test_a_local_model_name_is_served_locally(resolver: Resolver) -> None:
    assert resolver.resolve("all-minilm-l6-v2", Capability.EMBEDDINGS) == [Step("local", "all-minilm-l6-v2")]


def test_group_members_take_turns(resolver: Resolver) -> None:
    firsts = [resolver.resolve("smollm2", Capability.CHAT)[0].provider for _ in range(4)]
    assert firsts == ["cpp-a", "cpp-b", "cpp-a", "cpp-b"]


def test_unknown_name_without_capability_route_is_not_found(tmp_path: Path) -> None:
    plain = Resolver(load_settings(None, tmp_path))
    with pytest.raises(InferrelayError) as caught:
        plain.resolve("gpt-4o", Capability.CHAT)
    assert caught.value.kind is ErrorKind.MODEL_NOT_FOUND


def test_exposed_names(resolver: Resolver) -> None:
    exposed = resolver.exposed()
    assert {"smollm2-135m-instruct", "all-minilm-l6-v2", "gpt-4o-mini", "qwen", "qwen2.5-7b-instruct"} <= set(exposed)
    assert len(exposed) == len(set(exposed))


def group_settings(tmp_path: Path, strategy: str) -> Settings:
    settings = load_settings(REPO / "examples" / "full", tmp_path)
    group = settings.routes.load_balancing["smollm2-pool"].model_copy(update={"strategy": strategy})
    routes = settings.routes.model_copy(update={"load_balancing": {"smollm2-pool": group}})
    return settings.model_copy(update={"routes": routes})


def firsts(resolver: Resolver, count: int) -> list[str]:
    return [resolver.resolve("smollm2", Capability.CHAT)[0].provider for _ in range(count)]


def test_least_busy_sends_to_the_deployment_with_fewer_in_flight(tmp_path: Path) -> None:
    book = DeploymentBook()
    resolver = Resolver(group_settings(tmp_path, "least_busy"), book)
    book["cpp-a"].in_flight = 3
    assert firsts(resolver, 4) == ["cpp-b"] * 4
    book["cpp-b"].in_flight = 5
    assert firsts(resolver, 2) == ["cpp-a"] * 2
    book["cpp-a"].in_flight = book["cpp-b"].in_flight = 0
    assert sorted(firsts(resolver, 2)) == ["cpp-a", "cpp-b"], "ties take turns"


def test_latency_prefers_the_faster_deployment(tmp_path: Path) -> None:
    book = DeploymentBook()
    resolver = Resolver(group_settings(tmp_path, "latency"), book)
    book["cpp-a"].latency_ms, book["cpp-b"].latency_ms = 80.0, 20.0
    assert firsts(resolver, 3) == ["cpp-b"] * 3
    steps = resolver.resolve("smollm2", Capability.CHAT)
    assert [s.provider for s in steps] == ["cpp-b", "cpp-a"], "the slower one stays as a fallback"


def test_weighted_follows_the_weights(tmp_path: Path) -> None:
    resolver = Resolver(group_settings(tmp_path, "weighted"), DeploymentBook(), random.Random(7))
    picks = firsts(resolver, 3000)
    share = picks.count("cpp-a") / len(picks)
    assert 0.62 < share < 0.71, f"weights 2:1 should give about 2/3 to cpp-a, got {share:.3f}"
