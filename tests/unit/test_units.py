"""Durations and sizes as people write them in config files and requests."""

from __future__ import annotations

import math

import pytest

from inferrelay.config.units import parse_duration, parse_size


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (300, 300.0),
        ("90", 90.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("250ms", 0.25),
        ("-1", -1.0),
        ("0", 0.0),
        ("7d", 7 * 86400.0),
        ("366d", 366 * 86400.0),
        (-5, -1.0),
        ("-1e300", -1.0),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "5 minutes", "", "m5", True, None])
def test_what_is_not_a_duration_says_how_to_write_one(text: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    "text", ["inf", "-inf", "nan", "Infinity", math.inf, math.nan, 1e300, "1e12", 10**400, "367d", "1e400", -math.inf]
)
def test_a_duration_is_finite_and_at_most_a_year(text: object) -> None:
    """Longer values overflowed the dates computed from them (a keep_alive deadline) into 500s."""
    with pytest.raises(ValueError, match="at most a year"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "size"), [(1024, 1024), ("900MiB", 900 * 2**20), ("2GB", 2 * 10**9), ("0.5GiB", 2**29), ("12", 12)]
)
def test_sizes(text: object, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["lots", "-5", -5, "2 parsecs", True])
def test_what_is_not_a_size_says_how_to_write_one(text: object) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(text)
