"""Rate limits shared by every instance: GCRA (the generic cell rate algorithm).

A limit is ``Rate(count, per)``: at most ``count`` hits in any window of ``per`` seconds,
bursts included. GCRA keeps one number per key, the theoretical arrival time (TAT): a hit
is allowed when, after adding one emission interval ``per / count``, the TAT is at most
``per`` ahead of now; otherwise the answer says how long until it would be.

Backends: ``MemoryRateLimiter`` (one process) here; ``RedisRateLimiter`` in
``redis.py`` (one Lua script per hit, Redis's own clock, so every instance agrees).
Both also take hits in bulk (``charge``) for ``local_first.LocalFirstLimiter``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import trio

from nursery.rates import Rate as Rate


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    retry_after: float = 0.0  # seconds until a hit would be allowed (when refused)


class RateLimiter(Protocol):
    async def hit(self, key: str, rate: Rate) -> Verdict:
        """Count one hit on ``key``; refused hits are not counted. Raises
        ``RateLimiterUnavailable`` when the shared counters cannot be reached."""


Hits = dict[str, tuple[int, Rate]]  # key → (hits already let through, its rate)


class SharedCounters(Protocol):
    async def charge(self, hits: Hits) -> dict[str, float]:
        """Add hits that were already let through (they are counted even past the limit);
        answer, per key, how long until it would allow a hit again (0: it would now).
        Raises ``RateLimiterUnavailable`` when the shared counters cannot be reached."""


class SharedRateLimiter(RateLimiter, SharedCounters, Protocol):
    """What ``open_rate_limiter`` gives: hits one at a time and in bulk."""


def charge_tat(tat: float | None, now: float, hits: int, rate: Rate) -> tuple[float, float]:
    """GCRA for hits already let through: (the new TAT, seconds until a hit is allowed)."""
    new_tat = max(tat or now, now) + hits * rate.interval
    return new_tat, max(0.0, new_tat - now - rate.per)


def gcra(tat: float | None, now: float, rate: Rate) -> tuple[Verdict, float | None]:
    """One GCRA step: (verdict, the new TAT to store or None to keep the old one)."""
    new_tat, wait = charge_tat(tat, now, 1, rate)
    if wait > 1e-9:
        return Verdict(False, wait), None
    return Verdict(True), new_tat


class MemoryRateLimiter:
    """Counters in this process; keys whose TAT has passed are swept, so memory is bounded
    by the keys active within the longest ``per``."""

    SWEEP_EVERY = 10_000  # hits between sweeps of expired keys

    def __init__(self) -> None:
        self._tats: dict[str, float] = {}
        self._hits = 0

    async def hit(self, key: str, rate: Rate) -> Verdict:
        await trio.lowlevel.checkpoint()
        now = trio.current_time()
        self._hits += 1
        if self._hits % self.SWEEP_EVERY == 0:
            self._tats = {k: t for k, t in self._tats.items() if t > now}
        verdict, new_tat = gcra(self._tats.get(key), now, rate)
        if new_tat is not None:
            self._tats[key] = new_tat
        return verdict

    async def charge(self, hits: Hits) -> dict[str, float]:
        await trio.lowlevel.checkpoint()
        now = trio.current_time()
        over = {}
        for key, (count, rate) in hits.items():
            self._tats[key], over[key] = charge_tat(self._tats.get(key), now, count, rate)
        return over

    async def aclose(self) -> None:
        self._tats.clear()
