"""The LiteLLM export routes like the inferrelay config it came from."""

from __future__ import annotations

from pathlib import Path

import yaml

from inferrelay.config.litellm_export import export_litellm
from inferrelay.config.loading import load_settings
from tests.conftest import REPO


def exported(tmp_path: Path) -> tuple[dict, list[str]]:  # type: ignore[type-arg]
    settings = load_settings(REPO / "examples" / "full", tmp_path)
    config = export_litellm(settings, "http://127.0.0.1:9000/")
    text = yaml.safe_dump(config.as_dict(settings), sort_keys=False)
    assert "&id" not in text, "no YAML anchors: the file is read and edited by people"
    return yaml.safe_load(text), config.notes


def deployments(config: dict, name: str) -> list[dict]:  # type: ignore[type-arg]
    return [e["litellm_params"] for e in config["model_list"] if e["model_name"] == name]


def test_exact_match_to_a_remote_provider(tmp_path: Path) -> None:
    config, _ = exported(tmp_path)
    (qwen,) = deployments(config, "qwen")
    assert qwen == {
        "model": "hosted_vllm/qwen2.5-7b-instruct",
        "api_base": "http://127.0.0.1:8001/v1",
        "api_key": "os.environ/GPU_BOX_API_KEY",
        "timeout": 120.0,
        "rpm": 600,
        "tpm": 400000,
    }


def test_chain_becomes_first_step_plus_fallbacks(tmp_path: Path) -> None:
    config, _ = exported(tmp_path)
    (first,) = deployments(config, "gpt-4o-mini")
    assert first["model"] == "hosted_vllm/qwen2.5-7b-instruct"
    assert config["router_settings"]["fallbacks"] == [{"gpt-4o-mini": ["smollm2-pool", "local/smollm2-135m-instruct"]}]
    (local,) = deployments(config, "local/smollm2-135m-instruct")
    assert local["api_base"] == "http://127.0.0.1:9000/v1", "local models are reached through inferrelay"


def test_group_members_share_a_name_with_weights_and_strategy(tmp_path: Path) -> None:
    config, _ = exported(tmp_path)
    pool = deployments(config, "smollm2-pool")
    assert [(d["api_base"], d["weight"]) for d in pool] == [
        ("http://127.0.0.1:8081/v1", 2.0),
        ("http://127.0.0.1:8082/v1", 1.0),
    ]
    assert deployments(config, "smollm2") == pool
    assert config["router_settings"]["routing_strategy"] == "least-busy"


def test_prefix_patterns_become_wildcards_and_the_rest_is_noted(tmp_path: Path) -> None:
    config, notes = exported(tmp_path)
    (ollama,) = deployments(config, "llama3*")
    assert ollama["model"] == "ollama_chat/llama3.2:3b"
    assert ollama["api_base"] == "http://127.0.0.1:11434", "LiteLLM's ollama provider takes the server root"
    assert deployments(config, "text-embedding-*")[0]["model"] == "openai/all-minilm-l6-v2"
    assert sorted(notes) == [
        "capability route 'chat' has no LiteLLM equivalent",
        "capability route 'embeddings' has no LiteLLM equivalent",
    ]


def test_fallback_off_exports_no_fallbacks(tmp_path: Path) -> None:
    settings = load_settings(REPO / "examples" / "full", tmp_path).model_copy(update={"fallback": False})
    assert "fallbacks" not in export_litellm(settings, "http://x").as_dict(settings)["router_settings"]
