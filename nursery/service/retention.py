"""Audit retention: entries older than ``NURSERY_AUDIT_RETENTION_DAYS`` are deleted, in
batches, by one instance at a time.

Every instance runs ``AuditRetention.run`` (owned by ``run_background``): a round at start
(cheap when there is nothing to do: one indexed query), then one every ``period``. A round
deletes batches of at most ``batch_size`` entries, oldest first, until a batch comes back
short (nothing older is left), or until the store says another instance holds the pruning
lock: that one is on it, and this one skips the round.
Between batches it pauses ``pause`` seconds, so that a large backlog (the first round after
retention is turned on) leaves the database to the requests in between. Each batch is one
short transaction (see ``AuditStore.prune_audit``).

With ``days`` at 0 nothing is ever deleted. The analytics read the audit log
(``/api/analytics/summary`` looks back at most 366 days): a retention shorter than the window
asked for shows the older days empty.

Error handling: ``StoreUnavailable`` ends the round (logged; the next round tries again);
anything else is a bug and is raised to the owner.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import trio

from nursery.errors import StoreUnavailable
from nursery.stores.audit import AuditStore

log = logging.getLogger(__name__)

BATCH_SIZE = 1000
PAUSE = 0.1  # seconds between two batches of one round
PERIOD = 3600.0  # seconds between rounds


@dataclass(frozen=True, slots=True)
class Round:
    """What one round did: entries deleted, batches run, and whether it stopped because
    another instance was pruning (``yielded``)."""

    deleted: int
    batches: int
    yielded: bool


class AuditRetention:
    def __init__(
        self,
        store: AuditStore,
        *,
        days: float,
        batch_size: int = BATCH_SIZE,
        pause: float = PAUSE,
        period: float = PERIOD,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if batch_size < 1:
            raise ValueError("a prune batch holds at least one entry")
        self._store = store
        self.days = days
        self._batch_size = batch_size
        self._pause = pause
        self._period = period
        self._clock = clock
        self.pruned = 0  # entries deleted by this instance (a metric)

    @property
    def enabled(self) -> bool:
        return self.days > 0

    async def prune_now(self) -> Round:
        """One round (see the module docstring); raises ``StoreUnavailable``."""
        before = self._clock() - timedelta(days=self.days)
        deleted = batches = 0
        while True:
            done = await self._store.prune_audit(before, self._batch_size)
            if done is None:
                return Round(deleted, batches, yielded=True)
            batches += 1
            deleted += done
            self.pruned += done
            if done < self._batch_size:
                return Round(deleted, batches, yielded=False)
            await trio.sleep(self._pause)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Rounds until cancelled; returns at once when retention is off (``days`` 0)."""
        task_status.started()
        if not self.enabled:
            return
        while True:
            try:
                result = await self.prune_now()
            except StoreUnavailable as exc:
                log.warning("audit retention: round skipped (%s)", exc)
            else:
                if result.deleted:
                    log.info("audit retention: deleted %d entries older than %g days in %d "
                             "batches%s", result.deleted, self.days, result.batches,
                             " (then another instance took over)" if result.yielded else "")
            await trio.sleep(self._period)
