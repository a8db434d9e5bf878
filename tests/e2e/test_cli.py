"""The command line as a user types it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from inferrelay import __version__

LAUNCH = "import sys\n{block}from inferrelay.cli import app\napp()\n"


def run(*args: str, block: str = "") -> subprocess.CompletedProcess[str]:
    code = LAUNCH.format(block=f"sys.modules[{block!r}] = None\n" if block else "")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)


def test_version() -> None:
    done = run("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"inferrelay {__version__}"


def test_engines_json_lists_every_builtin_with_its_status() -> None:
    done = run("engines", "--json")
    assert done.returncode == 0, done.stderr
    engines = {row["name"]: row for row in json.loads(done.stdout)}
    assert set(engines) >= {"llamacpp", "onnx", "torch", "fake"}
    assert all(row["available"] for row in engines.values()), engines
    assert all(row["checked_at"] for row in engines.values())


def test_engines_says_why_one_cannot_run() -> None:
    done = run("engines", block="onnxruntime_genai")
    assert done.returncode == 0, done.stderr
    line = next(line for line in done.stdout.splitlines() if line.startswith("onnx "))
    assert "unavailable" in line
    assert "pip install 'inferrelay[onnx]'" in line
    assert "onnxruntime-genai" in line
    llama = next(line for line in done.stdout.splitlines() if line.startswith("llamacpp "))
    assert llama.rstrip().endswith("available")
    assert "unavailable" not in llama


def test_every_command_has_help() -> None:
    for command in ([], ["serve"], ["engines"]):
        done = run(*command, "--help")
        assert done.returncode == 0
        assert "Usage" in done.stdout


def test_config_validate_exit_codes_and_messages(tmp_path: Path) -> None:
    from tests.conftest import REPO

    good = run("config", "validate", str(REPO / "examples" / "full"))
    assert good.returncode == 0, good.stderr
    assert "valid" in good.stdout
    (tmp_path / "model-mappings.yaml").write_text("exact_matches:\n  a: {provider: nowhere}\n")
    bad = run("config", "validate", str(tmp_path))
    assert bad.returncode == 1
    assert f"{tmp_path}/model-mappings.yaml:2: exact_matches.a.provider: unknown provider" in bad.stderr
    assert "Traceback" not in bad.stderr
