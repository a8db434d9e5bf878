"""`inferrelay serve --workers N`: N server processes taking connections from one listening socket.

The parent binds the port and hands the socket to each child (`serve --fd`); the kernel spreads connections.
Each child is a whole server with its own routing state: share rate limits, cooldowns and health through
`runtime.state` (Redis); the rest stays per process (docs/scaling.md). Local models in worker processes are the
machine's: the parent runs the model host (runtime/model_host.py), one worker per model that every child calls,
started by the first child that loads it and closed when the last lets go. A child that exits is started again;
SIGTERM or SIGINT to the parent drains every child (server/draining.py) and exits when they have.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from types import FrameType
from typing import Any

from inferrelay.runtime.model_host import ModelHost

RESTART_WAIT_S = 1.0


def run_workers(count: int, host: str, port: int, args: list[str]) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.create_server((host.strip("[]"), port), family=family, backlog=2048)
    listener.set_inheritable(True)
    command = [sys.executable, "-m", "inferrelay.cli", "serve", "--fd", str(listener.fileno()), *args]
    models = ModelHost()
    models.start()
    env = {**os.environ, **models.environment()}

    def spawn() -> subprocess.Popen[bytes]:
        # Its own session: a Ctrl-C reaches the parent only, which passes it on once.
        return subprocess.Popen(
            command, pass_fds=(listener.fileno(),), env=env, start_new_session=True, preexec_fn=_die_with_parent
        )

    children = [spawn() for _ in range(count)]
    stopping: list[int] = []

    def stop(sig: int, frame: FrameType | None) -> None:
        stopping.append(sig)
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while not (stopping and all(child.poll() is not None for child in children)):
        for index, child in enumerate(children):
            if child.poll() is not None and not stopping:
                print(f"inferrelay: worker {child.pid} exited ({child.returncode}); starting another", file=sys.stderr)
                time.sleep(RESTART_WAIT_S)
                children[index] = spawn()
        time.sleep(0.1)
    listener.close()
    models.close()
    return 0


def _die_with_parent() -> None:
    """In the child, before it runs: a parent killed outright (SIGKILL) takes its children with it (Linux)."""
    if sys.platform == "linux":
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: SIGTERM, so the child drains


def serve_socket(app: Any, fd: int, options: dict[str, Any]) -> None:
    """A child: serve `app` on the parent's listening socket. Its family is read from the socket, so accepted
    connections get TCP_NODELAY as on a port of their own (uvicorn's `fd=` takes every fd for a Unix socket,
    and Nagle's delay then adds 40 ms to a small answer)."""
    import uvicorn

    listener = socket.socket(fileno=fd)
    uvicorn.Server(uvicorn.Config(app, **options)).run(sockets=[listener])
