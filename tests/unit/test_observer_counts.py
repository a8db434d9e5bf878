"""The app's counters live on its observer: remedies and unclassified errors, counted from each request's outcome."""

from __future__ import annotations

from inferrelay.errors import ErrorKind, classify
from inferrelay.observe.requests import Observer
from inferrelay.outcome import Attempt, ChainFailed, Remedy, Served, Step


class Odd(Exception):
    pass


def test_remedies_and_unclassified_attempts_are_counted_per_app() -> None:
    first, second = Observer(None, None), Observer(None, None)
    odd = classify(Odd("no rule for this"))
    served = Served(
        {"ok": True},
        "local/torch",
        [Attempt.of("local/onnx", odd)],
        [Remedy("m", "local/onnx", Step.NEXT_ENGINE, "after internal"), Remedy("m", "local/torch", Step.CPU, "x")],
    )
    first.served(first.begin("m", "chat", False), served)
    assert first.remedies_taken == {("m", "next_engine"): 1, ("m", "cpu"): 1}
    assert first.unclassified == {f"{__name__}.Odd": 1}
    assert not second.remedies_taken, "another app's counters are its own"
    assert not second.unclassified


def test_a_failed_request_counts_its_remedies_and_its_own_unclassified_error() -> None:
    observer = Observer(None, None)
    failed = ChainFailed(classify(Odd("boom")), [])
    failed.remedies = [Remedy("m", "local/torch", Step.SMALLER_BATCH, "32 -> 16")]
    observer.failed(observer.begin("m", "embeddings", False), failed)
    assert observer.remedies_taken == {("m", "smaller_batch"): 1}
    assert observer.unclassified == {f"{__name__}.Odd": 1}
    plain = classify(Odd("again"))
    observer.failed(observer.begin("m", "chat", False), plain)
    assert observer.unclassified[f"{__name__}.Odd"] == 2
    assert classify(TimeoutError("slow")).kind is not ErrorKind.INTERNAL
