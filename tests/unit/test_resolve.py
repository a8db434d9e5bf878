"""Name resolution: exact match, first pattern, capability, then local models; groups rotate."""

from __future__ import annotations

from pathlib import Path

import pytest

from inferrelay.config.loading import load_settings
from inferrelay.engines.base import Capability
from inferrelay.errors import ErrorKind, InferrelayError
from inferrelay.routing.resolve import Resolver, Step
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
