"""One measurement in a process of its own: `python -m inferrelay.tune.alone HOME SECONDS DEVICE` with the model's
spec (one engine, one dtype) as JSON on stdin, the measurement as JSON on stdout.

Each engine gets a fresh process: an engine measured after another in the same process inherits its threads
(torch's intra-op pool left llama.cpp at a third of its speed here) and its memory, which no server has.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np

from inferrelay.config.schema import ModelSpec
from inferrelay.tune.workload import Measured, measure

TIMEOUT_S = 600


def measure_alone(spec: ModelSpec, device: str, home: Path, seconds: float) -> Measured:
    command = [sys.executable, "-m", "inferrelay.tune.alone", str(home), str(seconds), device]
    try:
        done = subprocess.run(command, input=spec.model_dump_json(), capture_output=True, text=True,
                              timeout=TIMEOUT_S + seconds)  # fmt: skip
    except subprocess.TimeoutExpired:
        return Measured(None, None, None, error=f"no result within {TIMEOUT_S + seconds:.0f} s")
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        return Measured(None, None, None, error=f"the measuring process exited with {done.returncode}: {last}")
    return Measured(**json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    from inferrelay.engines.registry import EngineRegistry

    home, seconds, device = Path(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
    spec = ModelSpec.model_validate_json(sys.stdin.read())
    state = EngineRegistry.discover().state(spec.engines[0])
    if state is None or state.engine is None:
        measured = Measured(None, None, None, error=f"cannot run here: {state.probe.reason if state else 'unknown'}")
    else:
        measured = measure(state.engine, spec, device, home, seconds)
    if isinstance(measured.output, np.ndarray):
        measured.output = measured.output.tolist()
    print(json.dumps(asdict(measured)))


if __name__ == "__main__":
    main()
