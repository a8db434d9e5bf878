"""When a key stops working: `30d`, `12h`, `90m` from now."""

from __future__ import annotations

import time

from inferrelay.config.units import parse_duration

DAY_S = 86400.0


def expires_at(text: str, now: float | None = None) -> float:
    """Unix time `text` from now; `text` is days (`30d`) or a duration (`12h`, `90m`, `3600`)."""
    text = text.strip()
    seconds = float(text[:-1]) * DAY_S if text.endswith("d") and text[:-1].replace(".", "", 1).isdigit() else None
    if seconds is None:
        seconds = parse_duration(text)
    if not 0 < seconds <= 100 * 365 * DAY_S:
        raise ValueError(f"{text!r}: a key's lifetime is more than 0 and at most 100 years, e.g. '30d' or '12h'")
    return (time.time() if now is None else now) + seconds
