"""When a crashed engine worker may start again: backoff per crash, cooldown after a loop, never after SIGILL."""

from __future__ import annotations

from inferrelay.runtime.crashes import CrashHistory

KEY = ("m", "llamacpp")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def history(clock: Clock) -> CrashHistory:
    return CrashHistory(window_s=600, limit=3, cooldown_s=300, backoff_s=1, max_backoff_s=30, clock=clock)


def test_a_pair_that_never_crashed_may_start() -> None:
    assert history(Clock()).wait(KEY) is None


def test_backoff_doubles_with_each_recent_crash() -> None:
    clock = Clock()
    crashes = history(clock)
    crashes.crashed(KEY, "died of SIGSEGV")
    seconds, why = crashes.wait(KEY) or (0.0, "")
    assert (seconds, why) == (1.0, "restarting after a crash (died of SIGSEGV)")
    clock.now += 1.0
    assert crashes.wait(KEY) is None
    crashes.crashed(KEY, "died of SIGSEGV")
    assert (crashes.wait(KEY) or (0.0, ""))[0] == 2.0


def test_the_limit_within_the_window_opens_a_cooldown_that_ends() -> None:
    clock = Clock()
    crashes = history(clock)
    for _ in range(3):
        crashes.crashed(KEY, "died of SIGKILL")
        clock.now += 5
    seconds, why = crashes.wait(KEY) or (0.0, "")
    assert seconds == 295.0
    assert why.startswith("cooling down: 3 crashes in 600s, the last: died of SIGKILL")
    clock.now += 295
    assert crashes.wait(KEY) is None


def test_crashes_older_than_the_window_are_forgotten() -> None:
    clock = Clock()
    crashes = history(clock)
    crashes.crashed(KEY, "a")
    crashes.crashed(KEY, "b")
    clock.now += 601
    crashes.crashed(KEY, "c")
    assert [c.message for c in crashes.recent(KEY)] == ["c"]
    assert (crashes.wait(KEY) or (0.0, ""))[0] == 1.0


def test_an_unusable_pair_never_starts_and_says_why() -> None:
    crashes = history(Clock())
    crashes.mark_unusable(KEY, "SIGILL before serving")
    assert crashes.wait(KEY) == (float("inf"), "SIGILL before serving")
    (view,) = crashes.status("m")
    assert view["state"] == "SIGILL before serving"
    assert view["retry_in_s"] is None


def test_restarts_count_starts_after_the_first() -> None:
    crashes = history(Clock())
    assert crashes.restarts(KEY) == 0
    for _ in range(3):
        crashes.started(KEY)
    assert crashes.restarts(KEY) == 2
    assert crashes.status("other") == []


def test_llama_cpp_says_how_to_rebuild_after_an_illegal_instruction() -> None:
    from inferrelay.engines.llamacpp import LlamaCppEngine

    hint = LlamaCppEngine().crash_hint("SIGILL")
    assert "make clean && make test" in hint
    assert "GGML_NATIVE=OFF" in hint
    assert LlamaCppEngine().crash_hint("SIGKILL").startswith("killed from outside")
