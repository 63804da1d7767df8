"""Live sessions this instance has checked recently, so that an authenticated request does
not ask the database every time (a round trip to PostgreSQL and a bridge crossing per request,
about a quarter of a write's latency on these machines).

Revocation stays prompt, because every revocation is announced on the broker:

- the instance that revokes forgets the session before it answers;
- every instance forgets it when the announcement arrives (``forget``, called by the hub);
- while the broker subscription is down, or after it came back (announcements may have been
  missed), nothing cached is used: every request asks the database again;
- an entry is used for at most ``ttl`` seconds (this bounds the one remaining gap: a
  revocation whose announcement could not be published at all).

A database read that raced a revocation must not re-insert the revoked session: ``put`` takes
the ``generation`` read before the query, and is ignored if anything was forgotten since.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from nursery.models import Session

DEFAULT_TTL = 10.0  # seconds
DEFAULT_CAPACITY = 50_000  # entries (a few hundred bytes each)


class SessionCache:
    def __init__(
        self,
        *,
        broker_live: Callable[[], bool] = lambda: True,
        ttl: float = DEFAULT_TTL,
        capacity: int = DEFAULT_CAPACITY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._broker_live = broker_live
        self._ttl = ttl
        self._capacity = capacity
        self._clock = clock
        self._entries: OrderedDict[str, tuple[Session, float]] = OrderedDict()
        self.generation = 0  # bumped by every forget/clear
        self.hits = 0
        self.misses = 0

    def get(self, session_id: str) -> Session | None:
        """The cached live session, or None: ask the store (then ``put`` the answer)."""
        if not self._broker_live():
            self.clear()  # revocations are not reaching us: trust nothing cached
        entry = self._entries.get(session_id)
        if entry is not None and self._clock() - entry[1] < self._ttl:
            self.hits += 1
            return entry[0]
        self.misses += 1
        return None

    def put(self, session: Session, generation: int) -> None:
        """Cache ``session``, read from the store after ``generation`` was taken."""
        if generation != self.generation or not self._broker_live() or self._ttl <= 0:
            return
        self._entries[session.id] = (session, self._clock())
        self._entries.move_to_end(session.id)
        while len(self._entries) > self._capacity:
            self._entries.popitem(last=False)

    def forget(self, session_id: str) -> None:
        """The session was revoked (here or on another instance)."""
        self.generation += 1
        self._entries.pop(session_id, None)

    def clear(self) -> None:
        """Revocations may have been missed: forget everything."""
        self.generation += 1
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
