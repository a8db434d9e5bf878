"""Schemathesis fuzzes a real server from its own /openapi.json: no 5xx, every status documented, every answer as
described. Bounded: a fixed seed, a few dozen examples per operation, generation capped (fuzz_hooks.py)."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from inferrelay.access.keys import KeyStore
from tests.conftest import REPO

pytestmark = pytest.mark.slow

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
EXAMPLES = 25
HANG = 900
"""Far beyond a run's few minutes: only a hang reaches it."""


def test_the_server_answers_as_its_openapi_description_says(start_server: Any, tmp_path: Path, test_home: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "cache").symlink_to(test_home / "cache", target_is_directory=True)  # the ONNX export, built once
    _, secret = KeyStore(home).create(f"fuzz-{secrets.token_hex(4)}", admin=True)  # its name the fuzzer won't guess
    server = start_server(home)
    command = [
        *(sys.executable, "-m", "schemathesis.cli", "run", f"{server.url}/openapi.json"),
        *("--header", f"Authorization: Bearer {secret}", "--checks", CHECKS, "--max-examples", str(EXAMPLES)),
        *("--seed", "1", "--workers", "1", "--request-timeout", "120", "--no-shrink"),
        *("--phases", "examples,coverage,fuzzing,stateful", "--max-failures", "20"),
    ]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.e2e.fuzz_hooks", "PYTHONPATH": str(REPO)}
    run = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=HANG, check=False)
    report = run.stdout + run.stderr
    assert "Tested: " in report, report  # the description loaded and operations ran
    assert run.returncode == 0, report
