"""Every command that reads a configuration takes --config or INFERRELAY_CONFIG, and a broken one exits 2 with
each problem's file, line and key path, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BROKEN = "exact_matches:\n  a: {provider: nowhere}\n"
PROBLEM = "model-mappings.yaml:2: exact_matches.a.provider: unknown provider 'nowhere'"


def run(tmp_path: Path, *args: str, config_env: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "INFERRELAY_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"}
    env.pop("INFERRELAY_CONFIG", None)
    if config_env is not None:
        env["INFERRELAY_CONFIG"] = str(config_env)
    command = [sys.executable, "-c", "from inferrelay.cli import app; app()", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)


def config(tmp_path: Path, name: str, mappings: str) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "model-mappings.yaml").write_text(mappings)
    return folder


def commands(tmp_path: Path) -> dict[str, list[str]]:
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"id": 1, "text": "hello"}\n')
    return {
        "serve": ["serve", "--port", "1"],
        "doctor": ["doctor", str(rows)],
        "models register": ["models", "register", "mine", str(tmp_path / "model.gguf")],
        "batch embed": ["batch", "embed", str(rows), "-o", str(tmp_path / "out")],
        "batch generate": ["batch", "generate", str(rows), "-o", str(tmp_path / "out"), "--text-column", "text"],
        "config validate": ["config", "validate"],
        "config export-litellm": ["config", "export-litellm"],
    }


COMMANDS = ["serve", "doctor", "models register", "batch embed", "batch generate", "config validate"]
COMMANDS += ["config export-litellm"]


@pytest.mark.parametrize("command", COMMANDS)
def test_a_broken_config_from_the_environment_exits_2_naming_file_line_and_key(tmp_path: Path, command: str) -> None:
    broken = config(tmp_path, "broken", BROKEN)
    done = run(tmp_path, *commands(tmp_path)[command], config_env=broken)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"config error: {broken}/{PROBLEM}" in done.stderr
    assert "comes from INFERRELAY_CONFIG" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists(), "nothing started"


@pytest.mark.parametrize("command", ["serve", "models register", "batch embed", "config validate"])
def test_a_broken_config_option_exits_2_and_wins_over_the_environment(tmp_path: Path, command: str) -> None:
    broken = config(tmp_path, "broken", BROKEN)
    good = config(tmp_path, "good", "exact_matches: {}\n")
    args = commands(tmp_path)[command]
    args = [*args, str(broken)] if command == "config validate" else [*args, "--config", str(broken)]
    done = run(tmp_path, *args, config_env=good)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"config error: {broken}/{PROBLEM}" in done.stderr
    assert "INFERRELAY_CONFIG" not in done.stderr
    assert "Traceback" not in done.stderr


def test_config_validate_reads_the_environment_and_needs_a_directory(tmp_path: Path) -> None:
    good = config(tmp_path, "good", "exact_matches: {}\n")
    assert run(tmp_path, "config", "validate", config_env=good).stdout.startswith(f"{good}: valid:")
    missing = run(tmp_path, "config", "validate")
    assert missing.returncode == 2
    assert "name a configuration directory, or set INFERRELAY_CONFIG" in missing.stderr


UNREADABLE = {
    "a-folder-for-a-file": "providers.yaml: cannot be read: Is a directory",
    "not-utf8": "providers.yaml: not UTF-8 text",
    "a-list-as-a-key": "model-mappings.yaml:2: not valid YAML: found unhashable key",
    "no-such-directory": "cfg: not a directory",
}


@pytest.mark.parametrize("case", UNREADABLE)
def test_unreadable_configs_are_config_errors(tmp_path: Path, case: str) -> None:
    folder = tmp_path / "cfg"
    if case != "no-such-directory":
        folder.mkdir()
    if case == "a-folder-for-a-file":
        (folder / "providers.yaml").mkdir()
    elif case == "not-utf8":
        (folder / "providers.yaml").write_bytes(b"providers: {}\n\xff\xfe\n")
    elif case == "a-list-as-a-key":
        (folder / "model-mappings.yaml").write_text("exact_matches:\n  ? [a, b]\n  : {}\n")
    done = run(tmp_path, "serve", "--port", "1", config_env=folder)
    assert done.returncode == 2, done.stderr
    assert UNREADABLE[case] in done.stderr
    assert "Traceback" not in done.stderr
