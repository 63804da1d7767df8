"""What a user can read back about their own activity: the audit trail and daily analytics.

Both read the audit log, which ``nursery.service.audit.Audit`` writes a moment after the
fact: an action shows up here within milliseconds normally, later while the database is
away, and not at all if its entry was dropped (buffer full; counted in the metrics).

The analytics figures (``created``, ``completed``, ``active_devices``; defined in
``nursery.stores.audit``) are computed by the database; this module picks the window of whole
UTC days ending today and fills the days without entries with zeros.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, time, timedelta
from typing import Any

from nursery.service.accounts import Principal
from nursery.stores.audit import AuditEntry, AuditStore, DayFigures

MAX_ACTIVITY = 200
MAX_DAYS = 366


class Activity:
    def __init__(
        self, store: AuditStore, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self._store = store
        self._clock = clock

    async def recent(self, who: Principal, limit: int = 50) -> list[AuditEntry]:
        """The caller's own newest entries first (every device of theirs, no one else's)."""
        return await self._store.recent_audit(who.user_id, min(max(limit, 1), MAX_ACTIVITY))

    async def summary(self, who: Principal, days: int = 7) -> dict[str, Any]:
        """Per UTC day, the last ``days`` days up to and including today, oldest first."""
        days = min(max(days, 1), MAX_DAYS)
        today = self._clock().astimezone(UTC).date()
        first = today - timedelta(days=days - 1)
        start = datetime.combine(first, time(), UTC)
        end = datetime.combine(today + timedelta(days=1), time(), UTC)
        found = {f.day: f for f in await self._store.daily_figures(who.user_id, start, end)}
        figures = [found.get(first + timedelta(days=i), DayFigures(first + timedelta(days=i)))
                   for i in range(days)]
        return {
            "timezone": "UTC",
            "from": first.isoformat(),
            "to": today.isoformat(),
            "days": [f.to_json() for f in figures],
            "totals": {
                "created": sum(f.created for f in figures),
                "completed": sum(f.completed for f in figures),
            },
        }
