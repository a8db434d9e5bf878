"""Shared fixtures: a persistent test home (so ONNX exports are built once) and real server processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[1]
SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
FRANCE = [SYSTEM, {"role": "user", "content": "What is the capital of France?"}]

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def test_home() -> Path:
    """Content-addressed caches survive between runs, like pip's; nothing else is kept there."""
    home = Path(os.environ.get("INFERRELAY_TEST_HOME", REPO / ".cache" / "test-home"))
    home.mkdir(parents=True, exist_ok=True)
    return home


@pytest.fixture
def own_home(tmp_path: Path, test_home: Path) -> Path:
    """A server home of the test's own (its keys, registry, log), sharing the test home's content-addressed cache,
    so the ONNX exports are built once."""
    home = tmp_path / "home"
    home.mkdir()
    (test_home / "cache").mkdir(exist_ok=True)
    (home / "cache").symlink_to(test_home / "cache")
    return home


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """`inferrelay serve` as a real process on a free port of 127.0.0.1, stopped by `stop()`."""

    def __init__(
        self, home: Path, *args: str, block_modules: tuple[str, ...] = (), prelude: str = "", log: Path
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # Blocking a module the way a missing install does: `import x` raises ImportError.
        launcher = (
            "import sys\n"
            f"for name in {list(block_modules)!r}: sys.modules[name] = None\n"
            f"{prelude}\n"
            "from inferrelay.cli import app\n"
            "app()\n"
        )
        command = [sys.executable, "-c", launcher, "serve", "--port", str(self.port), "--log-level", "warning", *args]
        env = {**os.environ, "INFERRELAY_HOME": str(home), "HF_HUB_OFFLINE": "1"}
        self._log = log.open("w")
        self.process = subprocess.Popen(command, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        self._wait_ready(log)

    def _wait_ready(self, log: Path, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{log.read_text()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server did not become ready in {timeout}s:\n{log.read_text()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[object]:
    servers: list[ServerProcess] = []

    def start(home: Path, *args: str, block_modules: tuple[str, ...] = (), prelude: str = "") -> ServerProcess:
        log = tmp_path / f"server-{len(servers)}.log"
        server = ServerProcess(home, *args, block_modules=block_modules, prelude=prelude, log=log)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
