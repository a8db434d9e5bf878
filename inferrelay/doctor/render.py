"""The doctor's report as text a person reads in a terminal."""

from __future__ import annotations

from typing import Any

from inferrelay.doctor.report import Report
from inferrelay.runtime.memory import format_bytes

SIZES = ("size", "weights size")


def render(report: Report) -> str:
    found = report.inspection
    lines = [
        f"{found.path}",
        f"  format        {found.format or 'unknown'}",
        f"  capability    {found.capability or '?'}",
    ]
    lines += [f"  {name:<13} {_value(name, value)}" for name, value in found.details.items() if value is not None]
    if found.components:
        lines += ["", "COMPONENT        LIBRARY       CLASS                        USABLE  NOTE"]
        lines += [
            f"{c.name:<16} {c.library or '-':<13} {c.class_name or '-':<28} {'yes' if c.usable else 'NO':<7} {c.note}"
            for c in found.components
        ]
    if report.engines:
        lines += ["", "ENGINE     CAN SERVE  WHY"]
        for e in report.engines:
            lines.append(f"{e.engine:<10} {'yes' if e.can_serve else 'no':<10} {e.reason}")
            if e.build:
                lines.append(f"{'':<21} build: {e.build}")
    if report.memory:
        lines += ["", "DEVICE     ENGINE     NEEDS        FREE NOW     FITS"]
        lines += [
            f"{m.device:<10} {m.engine:<10} {format_bytes(m.needed):<12} "
            f"{format_bytes(m.free) if m.free is not None else 'unknown':<12} "
            f"{'yes' if m.fits else 'no' if m.fits is False else 'unknown'}"
            for m in report.memory
        ]
    lines += ["", "PROBLEMS" if found.problems else "No problems found."]
    for problem in found.problems:
        lines.append(f"  {'ERROR' if problem.blocking else 'note '}  {problem.what}")
        lines.append(f"         fix: {problem.fix}")
    if report.alternatives:
        lines += ["", "ALTERNATIVES (same capability, best first)"]
        lines += [
            f"  {a.name:<28} needs {format_bytes(a.needed):<11} {'fits now' if a.fits else 'does not fit now'}"
            for a in report.alternatives
        ]
    if report.tuned:
        lines += ["", "TUNED HERE (inferrelay tune)"]
        lines += [
            f"  {t['model']:<24} {t['engine']:<9} {t['precision']:<15} "
            f"{(format(t['value'], '.1f') + ' ' + t['metric']) if t['value'] is not None else 'failed'}"
            f"{'  (stale)' if t['stale'] else ''}"
            for t in report.tuned
        ]
    lines += ["", "usable: yes" if report.usable else "usable: NO"]
    return "\n".join(lines)


def _value(name: str, value: Any) -> str:
    if name in SIZES and isinstance(value, int):
        return format_bytes(value)
    if name == "parameters" and isinstance(value, int):
        return f"{value / 1e6:.1f} M"
    return str(value)
