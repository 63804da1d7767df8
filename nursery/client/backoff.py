"""When to reconnect: full-jitter exponential backoff, and the close codes that skip it. No I/O."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from nursery.protocol.close_codes import RECONNECT_NOW

# 1012 and 4008 mean "this connection, not the service, is the problem": come back now.
PROMPT_CODES = RECONNECT_NOW


@dataclass(frozen=True, slots=True)
class Ending:
    """How one connection attempt ended. ``code``: the close code, ``None`` without a close
    frame (network error, timeout). ``uptime``: seconds since the welcome (0 without one)."""

    code: int | None
    reason: str
    welcomed: bool = False
    uptime: float = 0.0
    retry_after: float | None = None


class Backoff:
    """Full-jitter exponential backoff: the n-th consecutive failure waits a uniform random
    delay in ``[0, min(maximum, initial * 2**n)]``. A connection that stayed up ``stable_after``
    seconds resets the count. A 1012 or 4008 after a welcome reconnects at once (within
    ``restart_jitter``, so that the clients of a restarting instance do not come back in one
    burst), once in a row: if the next connection ends that way again before it was stable,
    it counts as a failure (a server that keeps doing it must not be hammered).
    ``Retry-After`` (HTTP 429/503) is honoured as a lower bound."""

    def __init__(
        self,
        initial: float = 0.1,
        maximum: float = 10.0,
        *,
        restart_jitter: float = 0.5,
        stable_after: float = 10.0,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.initial = initial
        self.maximum = maximum
        self.restart_jitter = restart_jitter
        self.stable_after = stable_after
        self.failures = 0
        self._rng = rng
        self._prompted = False

    def ceiling(self) -> float:
        """The largest delay the next failure can get."""
        return min(self.maximum, self.initial * 2.0 ** min(self.failures, 64))

    def delay_after(self, ending: Ending) -> float:
        if ending.welcomed and ending.uptime >= self.stable_after:
            self.failures, self._prompted = 0, False
        if ending.code in PROMPT_CODES and ending.welcomed and not self._prompted:
            self._prompted = True
            return self._rng() * self.restart_jitter
        delay = self._rng() * self.ceiling()
        self.failures += 1
        return max(delay, ending.retry_after or 0.0)
