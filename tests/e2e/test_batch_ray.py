"""`--backend ray` on a local Ray: the same output as a local job, and the same resume after the driver dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.e2e.test_batch import ROWS, embeddings, rows_done, run, sentences, write_input

pytest.importorskip("ray", reason="the ray extra is not installed (make test installs it)")
pytestmark = pytest.mark.slow

SHARDS = ["--shard-size", "200", "--batch-size", "16", "--checkpoint-every", "1"]
RAY = ["--backend", "ray", "--workers", "2"]


def ray_env(home: Path) -> dict[str, str]:
    env = {**os.environ, "INFERRELAY_HOME": str(home), "HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)  # a local Ray, started and stopped by the job
    return env


def test_ray_backend_matches_a_local_job_and_resumes_after_the_driver_dies(test_home: Path, tmp_path: Path) -> None:
    source = write_input(tmp_path / "in.jsonl", sentences())
    local = run(test_home, str(source), "-o", str(tmp_path / "local"), *SHARDS)
    assert local.returncode == 0, local.stderr

    out = tmp_path / "ray"
    command = [sys.executable, "-m", "inferrelay.cli", "batch", "embed", str(source), "-o", str(out), *SHARDS, *RAY]
    # Its own session, so killing the group kills the driver and the local Ray it started, as a crash would.
    driver = subprocess.Popen(
        command, env=ray_env(test_home), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 300
    while driver.poll() is None and rows_done(out) < 64 and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    killed_at = rows_done(out)
    assert 0 < killed_at < ROWS, f"the driver was killed with {killed_at} rows done"

    resumed = subprocess.run(command, env=ray_env(test_home), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{ROWS - killed_at} computed" in resumed.stdout
    ids, vectors = embeddings(out)
    expected_ids, expected = embeddings(tmp_path / "local")
    assert ids == expected_ids
    assert len(set(ids)) == ROWS
    np.testing.assert_allclose(vectors, expected, atol=1e-5)
