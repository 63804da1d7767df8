"""``PostgresAuditStore``: the audit log (``AuditStore``) in PostgreSQL, when no MongoDB is
configured. It shares the ``PostgresStore``'s pool, timeout and error mapping (one crossing
per operation); the queries are in ``_audit``, the table in migration 0002.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from nursery.stores.audit import AuditEntry, DayFigures, is_uuid, storable
from nursery.stores.postgres import _audit
from nursery.stores.postgres.store import PostgresStore


class PostgresAuditStore:
    """Borrows ``PostgresStore._run`` (same package): one pool, one timeout, one mapping."""

    def __init__(self, store: PostgresStore) -> None:
        self._store = store

    async def append_audit(self, entries: list[AuditEntry]) -> None:
        entries = storable(entries)
        if entries:
            await self._store._run(_audit.append, entries, name="append_audit")

    async def recent_audit(self, user_id: str, limit: int) -> list[AuditEntry]:
        if not is_uuid(user_id):
            return []
        return await self._store._run(_audit.recent, uuid.UUID(user_id), limit, name="recent_audit")

    async def daily_figures(self, user_id: str, start: datetime, end: datetime) -> list[DayFigures]:
        if not is_uuid(user_id):
            return []
        return await self._store._run(
            _audit.daily_figures, uuid.UUID(user_id), start, end, name="daily_figures"
        )

    async def prune_audit(self, before: datetime, limit: int) -> int | None:
        return await self._store._run(_audit.prune, before, limit, name="prune_audit")
