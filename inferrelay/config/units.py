"""Durations and sizes as people write them: `5m`, `1h30m`, `-1`; `900MiB`, `2GB`, `0.5GiB`."""

from __future__ import annotations

import math
import re
from typing import Annotated

from pydantic import BeforeValidator

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
MAX_DURATION_S = 366 * 86400.0
"""A year (a leap one): longer is a mistake, and would overflow the dates computed from it (a deadline)."""
FOREVER = -1.0
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
_SIZE_UNITS |= {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_duration(value: object) -> float:
    """Seconds. A number is seconds; a string is `90`, `5m`, `1h30m`, `250ms`, `7d`; negative means forever (-1)."""
    return _bounded(_seconds(value), value)


def _bounded(seconds: float, value: object) -> float:
    if not math.isfinite(seconds) or seconds > MAX_DURATION_S:
        raise ValueError(f"{value!r} is not a duration inferrelay takes: at most a year (366d), or -1 for ever")
    return FOREVER if seconds < 0 else seconds


def _seconds(value: object) -> float:
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like '5m'")
    if isinstance(value, int | float):
        return float(value) if abs(value) < 1e300 else math.inf  # float(10**400) would raise OverflowError
    if not isinstance(value, str) or not value.strip():
        raise ValueError("a duration is a number of seconds or a string like '5m'")
    text = value.strip()
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    try:
        return sign * float(body)
    except ValueError:
        pass
    parts = _DURATION_PART.findall(body)
    if not parts or "".join(n + u for n, u in parts) != body:
        raise ValueError(f"{value!r} is not a duration: write seconds, or e.g. '30s', '5m', '1h30m', '-1' (forever)")
    return sign * sum(float(number) * _UNITS_S[unit] for number, unit in parts)


def parse_size(value: object) -> int:
    """Bytes. A number is bytes; a string is `900MiB`, `2GB`, `0.5GiB`."""
    if isinstance(value, bool):
        raise ValueError("a size is a number of bytes or a string like '2GiB'")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return int(value)
    match = _SIZE.match(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"{value!r} is not a size: write bytes, or e.g. '900MiB', '2GB', '0.5GiB'")
    number, unit = match.groups()
    return int(float(number) * _SIZE_UNITS[(unit or "B").upper()])


Duration = Annotated[float, BeforeValidator(parse_duration)]
Size = Annotated[int, BeforeValidator(parse_size)]
