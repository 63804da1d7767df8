"""The audit log and its analytics on PostgreSQL. Asyncio side, one function per operation.

``DAILY_FIGURES`` is the twin of ``mongo._audit.daily_figures_pipeline`` (see
``nursery.stores.audit`` for what the figures mean); a change to one is a change to both.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime

import asyncpg

from nursery.stores.audit import TODO_CREATE, TODO_UPDATE, AuditEntry, DayFigures

_COLUMNS = "id, user_id, kind, at, seq, session_id, device, instance, todo_id, done, details"
# The advisory lock the audit pruner holds for one batch (migrate.py's is 7_263_001).
PRUNE_LOCK_ID = 7_263_002


def _uuid(value: str | None) -> uuid.UUID | None:
    return None if value is None else uuid.UUID(value)


def _str(value: uuid.UUID | None) -> str | None:
    return None if value is None else str(value)


async def append(conn: asyncpg.Connection, entries: list[AuditEntry]) -> None:
    """One statement for the whole batch; ids already stored (a retried batch) are skipped."""
    await conn.execute(
        f"""
        INSERT INTO audit_log ({_COLUMNS})
        SELECT id, user_id, kind, at, seq, session_id, device, instance, todo_id, done,
               details::jsonb
        FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::timestamptz[], $5::bigint[],
                    $6::uuid[], $7::text[], $8::text[], $9::uuid[], $10::boolean[], $11::text[])
             AS batch (id, user_id, kind, at, seq, session_id, device, instance, todo_id, done,
                       details)
        ON CONFLICT (id) DO NOTHING
        """,
        [uuid.UUID(e.id) for e in entries],
        [uuid.UUID(e.user_id) for e in entries],
        [e.kind for e in entries],
        [e.at for e in entries],
        [e.seq for e in entries],
        [_uuid(e.session_id) for e in entries],
        [e.device for e in entries],
        [e.instance for e in entries],
        [_uuid(e.todo_id) for e in entries],
        [e.done for e in entries],
        [json.dumps(dict(e.details)) for e in entries],
    )


async def recent(conn: asyncpg.Connection, user_id: uuid.UUID, limit: int) -> list[AuditEntry]:
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM audit_log WHERE user_id = $1"
        f" ORDER BY at DESC, seq DESC, id DESC LIMIT $2",
        user_id,
        limit,
    )
    return [
        AuditEntry(
            id=str(r["id"]),
            user_id=str(r["user_id"]),
            kind=r["kind"],
            at=r["at"],
            seq=r["seq"],
            session_id=_str(r["session_id"]),
            device=r["device"],
            instance=r["instance"],
            todo_id=_str(r["todo_id"]),
            done=r["done"],
            details=json.loads(r["details"]),
        )
        for r in rows
    ]


DAILY_FIGURES = f"""
    SELECT (at AT TIME ZONE 'UTC')::date AS day,
           count(*) FILTER (WHERE kind = '{TODO_CREATE}') AS created,
           count(DISTINCT todo_id)
               FILTER (WHERE done AND kind IN ('{TODO_CREATE}', '{TODO_UPDATE}')) AS completed,
           count(DISTINCT session_id) AS active_devices
    FROM audit_log
    WHERE user_id = $1 AND at >= $2 AND at < $3
    GROUP BY day
    ORDER BY day
"""


async def daily_figures(
    conn: asyncpg.Connection, user_id: uuid.UUID, start: datetime, end: datetime
) -> list[DayFigures]:
    rows = await conn.fetch(DAILY_FIGURES, user_id, start, end)
    return [
        DayFigures(r["day"], r["created"], r["completed"], r["active_devices"]) for r in rows
    ]


async def prune(conn: asyncpg.Connection, before: datetime, limit: int) -> int | None:
    """One batch of the oldest entries older than ``before``, in one transaction holding the
    prune lock; ``None`` (nothing deleted) when another instance holds it."""
    async with conn.transaction():
        if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", PRUNE_LOCK_ID):
            return None
        deleted = await conn.fetchval(
            """
            WITH gone AS (
                DELETE FROM audit_log WHERE id IN (
                    SELECT id FROM audit_log WHERE at < $1 ORDER BY at LIMIT $2
                ) RETURNING 1
            )
            SELECT count(*) FROM gone
            """,
            before,
            limit,
        )
    return int(deleted)
