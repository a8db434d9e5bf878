"""Who gives way when a model does not fit: expired first, then least recently used; never pinned or busy."""

from __future__ import annotations

from inferrelay.config.embedded import SMOLLM2
from inferrelay.runtime.eviction import choose_victims, holders
from inferrelay.runtime.memory import MemoryEstimate
from inferrelay.runtime.slots import LoadedSlot, Placement

MIB = 2**20


def slot(
    name: str, mib: int, last_used: float, *, keep_alive: float = 300, pinned: bool = False, active: int = 0
) -> LoadedSlot:
    spec = SMOLLM2.model_copy(update={"name": name, "pinned": pinned})
    placement = Placement("fake", "cpu", "configured", "float32", MemoryEstimate(mib * MIB, 0, 0), mib * MIB, 0.1)
    loaded = LoadedSlot(model=object(), spec=spec, placement=placement, keep_alive=keep_alive)  # type: ignore[arg-type]
    loaded.last_used, loaded.running = last_used, active
    return loaded


def names(slots: list[LoadedSlot] | None) -> list[str] | None:
    return None if slots is None else [s.spec.name for s in slots]


def test_nothing_is_evicted_when_there_is_room() -> None:
    assert names(choose_victims([slot("a", 100, 0)], needed=50 * MIB, room=60 * MIB, now=10)) == []


def test_expired_go_first_then_least_recently_used() -> None:
    slots = [slot("recent", 100, 90), slot("old", 100, 10), slot("expired", 100, 50, keep_alive=5)]
    assert names(choose_victims(slots, needed=150 * MIB, room=0, now=100)) == ["expired", "old"]


def test_pinned_and_busy_models_stay_and_a_hopeless_case_evicts_nothing() -> None:
    slots = [slot("pinned", 500, 0, pinned=True), slot("busy", 500, 0, active=1), slot("idle", 100, 0)]
    assert names(choose_victims(slots, needed=300 * MIB, room=0, now=100)) is None
    assert names(choose_victims(slots, needed=100 * MIB, room=0, now=100)) == ["idle"]


def test_the_charge_is_the_larger_of_estimate_and_measurement() -> None:
    grown = slot("grown", 100, 0)
    grown.placement.held_bytes = 300 * MIB
    assert grown.placement.charged_bytes == 300 * MIB
    assert names(choose_victims([grown], needed=250 * MIB, room=0, now=1)) == ["grown"]


def test_the_refusal_names_each_holder_and_why_it_stays() -> None:
    text = holders([slot("p", 500, 0, pinned=True), slot("b", 100, 0, active=2)])
    assert text == "p on fake (500.0 MiB, pinned); b on fake (100.0 MiB, serving 2 request(s))"
