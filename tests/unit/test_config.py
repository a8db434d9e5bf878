"""config/loading.py: the embedded default, overrides from model-mappings.yaml, and precise errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from inferrelay.config.embedded import MINILM, SMOLLM2
from inferrelay.config.loading import MAPPINGS_FILE, ConfigError, load_settings
from inferrelay.engines.base import Capability


def write(tmp_path: Path, text: str) -> Path:
    folder = tmp_path / "config"
    folder.mkdir()
    (folder / MAPPINGS_FILE).write_text(text)
    return folder


def test_embedded_default(tmp_path: Path) -> None:
    settings = load_settings(None, tmp_path)
    chains = {m.name: m.engines for m in settings.models}
    assert chains == {
        "smollm2-135m-instruct": ["llamacpp", "onnx", "torch"],
        "all-minilm-l6-v2": ["onnx", "torch"],
    }
    assert settings.fallback is True
    assert settings.home == tmp_path
    assert settings.model("all-minilm-l6-v2").capabilities == [Capability.EMBEDDINGS]  # type: ignore[union-attr]


def test_embedded_default_is_not_shared_state(tmp_path: Path) -> None:
    load_settings(None, tmp_path).models[0].engines.append("fake")
    assert SMOLLM2.engines == ["llamacpp", "onnx", "torch"]
    assert load_settings(None, tmp_path).models[0].engines == ["llamacpp", "onnx", "torch"]


def test_config_dir_without_mappings_file_is_the_default(tmp_path: Path) -> None:
    folder = tmp_path / "empty"
    folder.mkdir()
    assert load_settings(folder, tmp_path) == load_settings(None, tmp_path)


def test_empty_mappings_file_is_the_default(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, ""), tmp_path) == load_settings(None, tmp_path)


def test_override_chain_keeps_other_fields(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, "models:\n  all-minilm-l6-v2:\n    engines: [torch]\n"), tmp_path)
    minilm = settings.model("all-minilm-l6-v2")
    assert minilm is not None
    assert minilm.engines == ["torch"]
    assert minilm.source == MINILM.source
    assert minilm.capabilities == MINILM.capabilities
    assert minilm.context_length == MINILM.context_length
    assert settings.model("smollm2-135m-instruct") == SMOLLM2


def test_new_model_is_added(tmp_path: Path) -> None:
    text = """
models:
  my-model:
    source: /models/x.gguf
    capabilities: [chat]
    engines: [fake]
    context_length: 128
    engine_options: {fake: {latency_ms: 5}}
"""
    settings = load_settings(write(tmp_path, text), tmp_path)
    assert [m.name for m in settings.models] == ["smollm2-135m-instruct", "all-minilm-l6-v2", "my-model"]
    mine = settings.model("my-model")
    assert mine is not None
    assert (mine.engines, mine.context_length, mine.engine_options) == (["fake"], 128, {"fake": {"latency_ms": 5}})


def test_fallback_false_is_read(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, "fallback: false\n"), tmp_path).fallback is False


NEW = "models:\n  my-model:\n    source: x.gguf\n    capabilities: [chat]\n"


@pytest.mark.parametrize(
    ("text", "where"),
    [
        pytest.param("bogus: 1\n", "bogus", id="unknown-top-level-key"),
        pytest.param(NEW + "    engines: [fake]\n    colour: red\n", "models.my-model.colour", id="unknown-model-key"),
        pytest.param(
            NEW + "    engines: [fake]\n    context_length: lots\n", "models.my-model.context_length", id="bad-type"
        ),
        pytest.param(
            NEW + "    engines: [fake]\n    context_length: 0\n", "models.my-model.context_length", id="bad-value"
        ),
        pytest.param(NEW + "    engines: []\n", "models.my-model.engines", id="empty-engines"),
        pytest.param(NEW + "    engines: [onnx, torch, onnx]\n", "models.my-model.engines", id="duplicate-engine"),
        pytest.param(NEW, "models.my-model.engines", id="missing-engines"),
        pytest.param(NEW + "    engines: fake\n", "models.my-model.engines", id="engines-not-a-list"),
        pytest.param(
            NEW + "    engines: [fake]\n    capabilities: [chat, juggling]\n",
            "models.my-model.capabilities.1",
            id="unknown-capability",
        ),
        pytest.param(
            "models:\n  all-minilm-l6-v2:\n    engines: [torch, torch]\n",
            "models.all-minilm-l6-v2.engines",
            id="duplicate-in-override",
        ),
        pytest.param("fallback: maybe\n", "fallback", id="fallback-not-bool"),
        pytest.param("models:\n  my-model: 5\n", "models.my-model", id="model-not-a-mapping"),
        pytest.param("models: [a, b]\n", "models", id="models-not-a-mapping"),
    ],
)
def test_errors_name_the_file_and_key_path(tmp_path: Path, text: str, where: str) -> None:
    folder = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_settings(folder, tmp_path)
    problems = caught.value.problems
    assert problems
    assert str(caught.value) == "\n".join(problems)
    pattern = re.compile(rf"{re.escape(str(folder / MAPPINGS_FILE))}:\d+: {re.escape(where)}: ")
    assert any(pattern.match(p) for p in problems), problems


def test_duplicate_engine_message_says_why(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, NEW + "    engines: [onnx, onnx]\n"), tmp_path)
    assert "twice" in str(caught.value)


def test_invalid_yaml_names_the_file(tmp_path: Path) -> None:
    folder = write(tmp_path, "models: [unclosed\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(folder, tmp_path)
    assert str(caught.value).startswith(f"{folder / MAPPINGS_FILE}:2: not valid YAML")


def test_every_broken_model_is_reported(tmp_path: Path) -> None:
    text = "models:\n  a:\n    engines: []\n  all-minilm-l6-v2:\n    context_length: -1\n"
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text), tmp_path)
    joined = str(caught.value)
    assert "models.a.engines" in joined
    assert "models.a.source" in joined
    assert "models.all-minilm-l6-v2.context_length" in joined


def test_config_dir_that_is_not_a_directory(tmp_path: Path) -> None:
    file = tmp_path / "file.yaml"
    file.write_text("fallback: false\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(file, tmp_path)
    assert str(file) in str(caught.value)


def test_a_model_cannot_be_both_encoder_and_decoder(tmp_path: Path) -> None:
    folder = tmp_path / "config"
    folder.mkdir()
    (folder / "model-mappings.yaml").write_text(
        "models:\n  both:\n    source: x\n    capabilities: [chat, embeddings]\n    engines: [fake]\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(folder, tmp_path)
    assert "models.both.capabilities" in str(caught.value)
    assert "not both" in str(caught.value)
