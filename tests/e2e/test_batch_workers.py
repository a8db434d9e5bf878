"""Batch jobs on worker processes: a killed worker is retried, Ctrl-C stops cleanly, and `batch generate`."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.e2e.test_batch import ROWS, batch, embeddings, rows_done, run, sentences, write_input
from tests.references import llama_cpp_chat

pytestmark = pytest.mark.slow

SHARDS = ["--shard-size", "300", "--batch-size", "16", "--checkpoint-every", "1"]


class Lines:
    """A running job's stderr, read as it comes, so a test can act on what the job logs."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        assert process.stderr is not None
        self._stream = process.stderr
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self._stream:
            self.lines.append(line)

    def text(self) -> str:
        self._thread.join(timeout=60)
        return "".join(self.lines)

    def worker_pid(self, slot: int, timeout: float = 120) -> int:
        pattern = re.compile(rf"worker {slot} started \(pid (\d+)\)")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if match := pattern.search(line):
                    return int(match.group(1))
            time.sleep(0.05)
        raise AssertionError(f"worker {slot} never started: {''.join(self.lines)}")


def shard(outdir: Path, index: int) -> dict[str, object]:
    return dict(json.loads((outdir / "_manifest.json").read_text())["shards"][index])


def wait_for_rows(process: subprocess.Popen[str], outdir: Path, index: int, at_least: int) -> None:
    deadline = time.monotonic() + 300
    while process.poll() is None and time.monotonic() < deadline:
        if (outdir / "_manifest.json").exists() and int(str(shard(outdir, index)["rows_done"])) >= at_least:
            return
        time.sleep(0.01)
    raise AssertionError(f"shard {index} never reached {at_least} rows")


def test_two_workers_give_the_same_output_and_a_killed_worker_is_retried(test_home: Path, tmp_path: Path) -> None:
    source = write_input(tmp_path / "in.jsonl", sentences())
    inline = run(test_home, str(source), "-o", str(tmp_path / "inline"), *SHARDS)
    assert inline.returncode == 0, inline.stderr

    out = tmp_path / "workers"
    process = batch(test_home, str(source), "-o", str(out), *SHARDS, "--workers", "2")
    lines = Lines(process)
    victim = lines.worker_pid(0)
    wait_for_rows(process, out, 0, 16)  # worker 0 took shard 0 and has checkpointed some of it
    killed_at = int(str(shard(out, 0)["rows_done"]))
    subprocess.run(["kill", "-KILL", str(victim)], check=True)
    assert process.stdout is not None
    stdout = process.stdout.read()  # stderr is the reader thread's
    process.wait(timeout=600)
    stderr = lines.text()

    assert process.returncode == 0, stderr
    assert killed_at < 300, "the kill came after shard 0 was done"
    assert "1 workers died" in stdout
    assert "1 retries" in stdout
    assert re.search(r"shard 0 failed \(attempt 1\), retrying: engine_crashed: worker 0 .* died of SIGKILL", stderr)
    assert shard(out, 0)["attempts"] == 2
    assert shard(out, 1)["attempts"] == 1
    ids, vectors = embeddings(out)
    expected_ids, expected = embeddings(tmp_path / "inline")
    assert ids == expected_ids
    np.testing.assert_allclose(vectors, expected, atol=1e-5)


def test_ctrl_c_stops_after_the_current_checkpoint_and_the_job_resumes(test_home: Path, tmp_path: Path) -> None:
    source = write_input(tmp_path / "in.jsonl", sentences())
    out = tmp_path / "out"
    process = batch(test_home, str(source), "-o", str(out), *SHARDS)
    wait_for_rows(process, out, 0, 16)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, stderr
    assert "run the same command again to resume" in stderr
    manifest = json.loads((out / "_manifest.json").read_text())
    assert {s["state"] for s in manifest["shards"]} <= {"pending", "done"}  # nothing left "running"
    stopped_at = rows_done(out)
    assert 0 < stopped_at < ROWS
    for s in manifest["shards"]:  # every checkpoint the manifest names is on disk
        assert all((out / c["file"]).is_file() for c in s["checkpoints"])

    resumed = run(test_home, str(source), "-o", str(out), *SHARDS)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{ROWS - stopped_at} computed" in resumed.stdout
    assert run(test_home, str(source), "-o", str(tmp_path / "whole"), *SHARDS).returncode == 0
    ids, vectors = embeddings(out)
    expected_ids, expected = embeddings(tmp_path / "whole")
    assert ids == expected_ids
    np.testing.assert_allclose(vectors, expected, atol=1e-5)


PROMPTS = ["What is 2+2?", "Name a colour.", "Say hello.", "What is the capital of France?", "Write one word."]


def test_generate_matches_llama_cpp_greedy_answers(test_home: Path, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"q{i}", "prompt": p}) + "\n" for i, p in enumerate(PROMPTS)))
    chats = tmp_path / "chats.jsonl"
    system = {"role": "system", "content": "Answer in one short sentence."}
    chats.write_text(
        "".join(json.dumps({"messages": [system, {"role": "user", "content": p}]}) + "\n" for p in PROMPTS)
    )
    tokens = ["--max-tokens", "12", "--batch-size", "2"]
    for source, out in ((prompts, tmp_path / "from-prompts"), (chats, tmp_path / "from-messages")):
        done = run(test_home, str(source), "-o", str(out), *tokens, task="generate")
        assert done.returncode == 0, done.stderr

    from_prompts = pd.read_parquet(tmp_path / "from-prompts")
    from_messages = pd.read_parquet(tmp_path / "from-messages")
    assert list(from_prompts["id"]) == [f"q{i}" for i in range(len(PROMPTS))]
    assert list(from_messages["id"]) == list(range(len(PROMPTS)))  # no id column: row numbers
    for i, prompt in enumerate(PROMPTS):
        for frame, messages in ((from_prompts, []), (from_messages, [system])):
            # each from a fresh Llama: one that answered before would reuse that prompt's KV prefix
            answer = llama_cpp_chat([*messages, {"role": "user", "content": prompt}], 12)
            row = frame.iloc[i]
            assert row["text"] == answer.text
            assert row["prompt_tokens"] == answer.prompt_tokens
            assert row["completion_tokens"] == answer.completion_tokens
            assert row["finish_reason"] == answer.finish_reason
