"""Minimal OpenAI-compatible upstreams (bench/minimal_upstream.py) as real processes, for tests of the gateway."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator

import httpx

from tests.conftest import REPO, free_port


class Upstream:
    """bench/minimal_upstream.py, an OpenAI-compatible server with a fixed answer."""

    def __init__(self) -> None:
        self.port = free_port()
        command = [sys.executable, str(REPO / "bench" / "minimal_upstream.py"), str(self.port)]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            try:
                httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=1)
                return
            except httpx.HTTPError:
                self.process.poll()
                assert self.process.returncode is None, "minimal upstream exited at start"
                subprocess.run(["sleep", "0.05"], check=True)
        raise AssertionError("minimal upstream did not start")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


def running_upstreams() -> Iterator[Callable[[], Upstream]]:
    """A fixture's body: a test module takes it as `upstreams = pytest.fixture(running_upstreams)`."""
    started: list[Upstream] = []

    def start() -> Upstream:
        started.append(Upstream())
        return started[-1]

    yield start
    for upstream in started:
        upstream.stop()
