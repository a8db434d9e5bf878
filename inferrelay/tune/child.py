"""The tune a server runs by itself (`runtime.tune: auto`), in a child process so that loading every engine of
the model never touches the server's own: `python -m inferrelay.tune.child HOME SECONDS DEVICE` with the model's
spec as JSON on stdin; the results go to the tuning book."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from inferrelay.config.schema import ModelSpec
from inferrelay.engines.registry import EngineRegistry
from inferrelay.tune.book import TuningBook
from inferrelay.tune.run import tune


def main() -> None:
    home, seconds, device = Path(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
    spec = ModelSpec.model_validate(json.loads(sys.stdin.read()))
    # Only what a server runs (no compiled encoder: that is for batch jobs). Another server may have tuned it
    # while this one waited: then its results are read, and written back as they are.
    tunings = tune(spec, home, EngineRegistry.discover(), device, seconds, fresh_enough=True, jobs=False)
    TuningBook(home).record(tunings)
    print(json.dumps([t.view() for t in tunings]))


if __name__ == "__main__":
    main()
