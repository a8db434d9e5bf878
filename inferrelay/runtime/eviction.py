"""Which loaded models to unload so that another fits, or none at all.

Only idle models that are not pinned may go: those idle past their
keep_alive first (longest idle first), then the least recently used. Nothing
is unloaded unless unloading the candidates actually makes enough room:
evicting and then refusing anyway would be the worst of both.
"""

from __future__ import annotations

from collections.abc import Sequence

from inferrelay.runtime.memory import format_bytes
from inferrelay.runtime.slots import LoadedSlot


def evictable(slots: Sequence[LoadedSlot], now: float) -> list[LoadedSlot]:
    """The order in which idle, unpinned models give way."""
    idle = [s for s in slots if s.active == 0 and not s.pinned]
    return sorted(idle, key=lambda s: (not s.expired(now), s.last_used))


def choose_victims(slots: Sequence[LoadedSlot], needed: int, room: int, now: float) -> list[LoadedSlot] | None:
    """The fewest models, in eviction order, whose memory makes `needed` fit in `room`; None if none can."""
    victims: list[LoadedSlot] = []
    for slot in evictable(slots, now):
        if room >= needed:
            break
        victims.append(slot)
        room += slot.placement.charged_bytes
    return victims if room >= needed else None


def holders(slots: Sequence[LoadedSlot]) -> str:
    """Who holds the memory, for the refusal: each model, its size, and why it stays."""
    parts = []
    for slot in sorted(slots, key=lambda s: -s.placement.charged_bytes):
        why = "pinned" if slot.pinned else f"serving {slot.active} request(s)" if slot.active else "idle"
        parts.append(
            f"{slot.spec.name} on {slot.placement.engine} ({format_bytes(slot.placement.charged_bytes)}, {why})"
        )
    return "; ".join(parts) or "no model of inferrelay's"
