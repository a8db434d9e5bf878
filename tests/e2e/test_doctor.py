"""The doctor for real: the command's exit code, and the runtime's report on a registered model that broke."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from inferrelay.config.embedded import SMOLLM2
from tests.e2e.test_runtime import GGUF, api
from tests.e2e.test_runtime import home as home

pytestmark = pytest.mark.slow


def doctor(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "INFERRELAY_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "inferrelay.cli", "doctor", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def test_the_command_exits_zero_for_a_usable_model_and_one_for_a_broken_one(home: Path) -> None:
    good = doctor(home, str(GGUF))
    assert good.returncode == 0, good.stdout + good.stderr
    assert "usable: yes" in good.stdout
    cut = home / "models" / "cut.gguf"
    cut.write_bytes(GGUF.read_bytes()[:1_000_000])
    broken = doctor(home, str(cut), "--json")
    assert broken.returncode == 1
    report = json.loads(broken.stdout)
    assert report["usable"] is False
    assert "truncated" in report["problems"][0]["what"]
    assert report["alternatives"][0]["name"] == SMOLLM2.name
    missing = doctor(home, str(home / "nowhere.gguf"))
    assert missing.returncode == 1
    assert "does not exist" in missing.stdout


def test_the_runtime_reports_on_a_registered_model_whose_file_was_damaged(start_server: Any, home: Path) -> None:
    server = start_server(home)
    assert api(server, "POST", "/models/register", {"name": "mine", "source": "my-smol.gguf"}).status_code == 201
    healthy = api(server, "GET", "/models/mine/doctor").json()
    assert healthy["usable"] is True
    assert healthy["details"]["quantisation"] == "Q4_1"
    assert any(e["engine"] == "llamacpp" and e["can_serve"] for e in healthy["engines"])

    with (home / "models" / "my-smol.gguf").open("r+b") as file:
        file.truncate(GGUF.stat().st_size - 1000)
    damaged = api(server, "GET", "/models/mine/doctor").json()
    assert damaged["usable"] is False
    size = GGUF.stat().st_size
    assert f"truncated: expected {size} bytes, the file has {size - 1000}" in damaged["problems"][0]["what"]
    assert [a["name"] for a in damaged["alternatives"]] == [SMOLLM2.name]
    unknown = api(server, "GET", "/models/nothing/doctor")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "model_not_found"
