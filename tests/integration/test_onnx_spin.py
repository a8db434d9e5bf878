"""onnx's intra-op threads sleep between calls in a server and spin in a batch job's process (batch/model.py),
where nothing else needs the cores; the answer is the same either way."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from inferrelay.batch.model import dedicated
from inferrelay.config.embedded import MINILM
from tests.engine_here import engine_or_skip

TEXTS = ["threads that spin", "threads that sleep"]


def test_spinning_is_the_batch_jobs_and_changes_no_vector(test_home: Path) -> None:
    onnx = engine_or_skip("onnx")
    batch = MINILM.model_copy(update={"engine_options": dedicated(MINILM.engine_options)})
    served, spinning = (onnx.load(spec, "cpu", test_home) for spec in (MINILM, batch))
    try:
        entries = [m._session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning")  # type: ignore[attr-defined]
                   for m in (served, spinning)]  # fmt: skip
        assert entries == ["0", "1"]
        np.testing.assert_array_equal(served.embed(TEXTS).vectors, spinning.embed(TEXTS).vectors)  # type: ignore[attr-defined]
    finally:
        served.close()
        spinning.close()


def test_a_model_that_says_otherwise_keeps_its_threads_asleep() -> None:
    assert dedicated({"onnx": {"spin": False}, "torch": {"parallel": 2}}) == {
        "onnx": {"spin": False},
        "torch": {"compile": False, "parallel": 2},
    }
    assert dedicated({}) == {"onnx": {"spin": True}, "torch": {"compile": False}}
    assert dedicated({"torch": {"compile": False}}, compile=True)["torch"] == {"compile": False}
    assert dedicated({}, compile=True)["torch"] == {"compile": True}
