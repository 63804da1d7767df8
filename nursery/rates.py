"""A rate limit's value: at most ``count`` events in any ``per`` seconds (bursts included).

Written ``COUNT/PERIOD`` in the settings: ``10/60`` or ``10/60s`` (ten a minute), ``10/1m``,
``1000/1h``, ``20/1`` (twenty a second).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(.+)$")


@dataclass(frozen=True, slots=True)
class Rate:
    count: int
    per: float  # seconds

    @property
    def interval(self) -> float:
        return self.per / self.count

    def __str__(self) -> str:
        return f"{self.count}/{self.per:g}s"


def parse_duration(text: str) -> float:
    """Seconds: ``2.5``, ``500ms``, ``30s``, ``5m``, ``2h``, ``7d``; ``ValueError`` otherwise."""
    found = _DURATION.match(text)
    if found is None:
        raise ValueError(f"not a duration: {text!r}")
    return float(found.group(1)) * UNITS[found.group(2) or "s"]


def parse_rate(text: str) -> Rate:
    """``COUNT/PERIOD`` (see the module); ``ValueError`` otherwise."""
    found = _RATE.match(text)
    if found is None:
        raise ValueError(f"not a rate: {text!r}")
    rate = Rate(int(found.group(1)), parse_duration(found.group(2)))
    if rate.count <= 0 or rate.per <= 0:
        raise ValueError(f"a rate needs a positive count and period, not {text!r}")
    return rate
