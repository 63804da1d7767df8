"""Queries for todos and the change feed. Asyncio side, one function per store operation.

The revision rule (docs/protocol.md): every write first bumps ``users.rev`` and writes the todo with
that revision in the same transaction. The bump takes the user's row lock until commit, so a
user's writes commit one at a time, in revision order, and readers never see rev N+1 before N.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg

from nursery.errors import InvalidInput, NotFound
from nursery.ids import row_id
from nursery.models import (
    Change,
    ChangeBatch,
    Todo,
    TodoDraft,
    TodoPage,
    TodoPatch,
    WriteResult,
    change_from_json,
)
from nursery.stores.base import stale_revision

_TODO_COLUMNS = "id, title, notes, done, due, tags, rev, created_at, updated_at, deleted_at"
PATCHABLE = frozenset({"title", "notes", "done", "due", "tags"})


def todo_from_row(row: asyncpg.Record) -> Todo:
    return Todo(
        id=str(row["id"]),
        title=row["title"],
        notes=row["notes"],
        done=row["done"],
        due=row["due"],
        tags=tuple(row["tags"]),
        rev=row["rev"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def change_from_row(row: asyncpg.Record) -> Change:
    if row["deleted_at"] is not None:
        return Change(rev=row["rev"], op="delete", id=str(row["id"]))
    todo = todo_from_row(row)
    return Change(rev=todo.rev, op="upsert", id=todo.id, todo=todo)


# -- writes ------------------------------------------------------------------------------------

Apply = Callable[[asyncpg.Connection, int], Awaitable[Change]]


async def _write(
    conn: asyncpg.Connection,
    user_id: uuid.UUID,
    apply: Apply,
    idempotency_key: str | None,
    fingerprint: str,
) -> WriteResult:
    """Take the user's next revision, apply one change with it, remember the idempotency key.

    A key seen before returns the first result and rolls the revision back: nothing changes.
    Keys are checked after the row lock, so two concurrent retries cannot both write.
    """
    async with conn.transaction():
        rev = await conn.fetchval(
            "UPDATE users SET rev = rev + 1 WHERE id = $1 RETURNING rev", user_id
        )
        if rev is None:
            raise NotFound("user not found")
        if idempotency_key is not None:
            earlier = await conn.fetchrow(
                "SELECT fingerprint, result FROM idempotency_keys WHERE user_id = $1 AND key = $2",
                user_id,
                idempotency_key,
            )
            if earlier is not None:
                raise _Replay(earlier["fingerprint"], earlier["result"])
        change = await apply(conn, rev)
        if idempotency_key is not None:
            await conn.execute(
                "INSERT INTO idempotency_keys (user_id, key, fingerprint, result)"
                " VALUES ($1, $2, $3, $4)",
                user_id,
                idempotency_key,
                fingerprint,
                json.dumps(change.to_json()),
            )
    return WriteResult(change)


class _Replay(Exception):
    """Unwinds the transaction of a write whose idempotency key was used before."""

    def __init__(self, fingerprint: str, result: str) -> None:
        self.fingerprint = fingerprint
        self.result = result


async def write(
    conn: asyncpg.Connection,
    user_id: uuid.UUID,
    apply: Apply,
    idempotency_key: str | None,
    fingerprint: str,
) -> WriteResult:
    try:
        return await _write(conn, user_id, apply, idempotency_key, fingerprint)
    except _Replay as replay:
        if replay.fingerprint != fingerprint:
            raise InvalidInput(
                "this Idempotency-Key was used for a different request",
                details={"header": "Idempotency-Key"},
            ) from None
        return WriteResult(change_from_json(json.loads(replay.result)), replayed=True)


def insert_todo(user_id: uuid.UUID, draft: TodoDraft) -> Apply:
    async def apply(conn: asyncpg.Connection, rev: int) -> Change:
        row = await conn.fetchrow(
            f"INSERT INTO todos (id, user_id, title, notes, done, due, tags, rev)"
            f" VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {_TODO_COLUMNS}",
            row_id(),
            user_id,
            draft.title,
            draft.notes,
            draft.done,
            draft.due,
            list(draft.tags),
            rev,
        )
        return change_from_row(row)

    return apply


async def create_in_one_statement(
    conn: asyncpg.Connection, user_id: uuid.UUID, draft: TodoDraft
) -> WriteResult:
    """A create without an idempotency key: one statement, so one round trip instead of four
    (BEGIN, bump, insert, COMMIT). The statement is its own transaction and the bump takes the
    user's row lock until it commits, so the revision rule holds exactly as in ``write``."""
    row = await conn.fetchrow(
        f"""
        WITH bumped AS (UPDATE users SET rev = rev + 1 WHERE id = $1 RETURNING rev)
        INSERT INTO todos (id, user_id, title, notes, done, due, tags, rev)
        SELECT $2, $1, $3, $4, $5, $6, $7, bumped.rev FROM bumped
        RETURNING {_TODO_COLUMNS}
        """,
        user_id,
        row_id(),
        draft.title,
        draft.notes,
        draft.done,
        draft.due,
        list(draft.tags),
    )
    if row is None:
        raise NotFound("user not found")
    return WriteResult(change_from_row(row))


async def _lock_live_todo(
    conn: asyncpg.Connection, user_id: uuid.UUID, todo_id: uuid.UUID, if_rev: int | None
) -> None:
    current = await conn.fetchval(
        "SELECT rev FROM todos WHERE id = $1 AND user_id = $2 AND deleted_at IS NULL FOR UPDATE",
        todo_id,
        user_id,
    )
    if current is None:
        raise NotFound("todo not found")
    if if_rev is not None and if_rev != current:
        raise stale_revision(if_rev, current)


def update_todo(user_id: uuid.UUID, todo_id: uuid.UUID, patch: TodoPatch) -> Apply:
    async def apply(conn: asyncpg.Connection, rev: int) -> Change:
        await _lock_live_todo(conn, user_id, todo_id, patch.if_rev)
        names = sorted(patch.fields.keys() & PATCHABLE)  # never a caller-chosen column
        values: list[Any] = [list(v) if n == "tags" else v for n, v in
                             ((n, patch.fields[n]) for n in names)]
        assignments = "".join(f", {name} = ${i}" for i, name in enumerate(names, start=3))
        row = await conn.fetchrow(
            f"UPDATE todos SET rev = $2, updated_at = now(){assignments}"
            f" WHERE id = $1 RETURNING {_TODO_COLUMNS}",
            todo_id,
            rev,
            *values,
        )
        return change_from_row(row)

    return apply


def delete_todo(user_id: uuid.UUID, todo_id: uuid.UUID, if_rev: int | None) -> Apply:
    async def apply(conn: asyncpg.Connection, rev: int) -> Change:
        await _lock_live_todo(conn, user_id, todo_id, if_rev)
        row = await conn.fetchrow(
            f"UPDATE todos SET rev = $2, updated_at = now(), deleted_at = now()"
            f" WHERE id = $1 RETURNING {_TODO_COLUMNS}",
            todo_id,
            rev,
        )
        return change_from_row(row)

    return apply


# -- reads -------------------------------------------------------------------------------------


async def get_todo(conn: asyncpg.Connection, user_id: uuid.UUID, todo_id: uuid.UUID) -> Todo | None:
    row = await conn.fetchrow(
        f"SELECT {_TODO_COLUMNS} FROM todos WHERE id = $1 AND user_id = $2 AND deleted_at IS NULL",
        todo_id,
        user_id,
    )
    return None if row is None else todo_from_row(row)


def encode_cursor(todo: Todo) -> str:
    raw = json.dumps([todo.created_at.isoformat(), todo.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, todo_id = json.loads(raw)
        moment = datetime.fromisoformat(created)
        if moment.tzinfo is None:
            raise ValueError("we only issue cursors with a zone")
        # In UTC, or the driver fails (500) on instants Python can parse but not shift.
        return moment.astimezone(UTC), uuid.UUID(todo_id)
    # uuid.UUID(5) raises AttributeError; astimezone at year 1 or 9999, OverflowError.
    except (ValueError, TypeError, AttributeError, OverflowError) as exc:
        raise InvalidInput(
            "bad cursor", details=[{"field": "cursor", "message": "not a cursor from this list"}]
        ) from exc


def _like_pattern(query: str) -> str:
    escaped = query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


async def list_todos(
    conn: asyncpg.Connection,
    user_id: uuid.UUID,
    done: bool | None,
    query: str | None,
    limit: int,
    cursor: str | None,
) -> TodoPage:
    after = decode_cursor(cursor) if cursor else None
    # One snapshot for the page and its rev: hello(since=rev) then misses nothing.
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        rev = await conn.fetchval("SELECT rev FROM users WHERE id = $1", user_id) or 0
        rows = await conn.fetch(
            f"""
            SELECT {_TODO_COLUMNS} FROM todos
            WHERE user_id = $1 AND deleted_at IS NULL
              AND ($2::boolean IS NULL OR done = $2)
              AND ($3::text IS NULL OR title ILIKE $3 OR notes ILIKE $3)
              AND ($4::timestamptz IS NULL OR (created_at, id) > ($4, $5::uuid))
            ORDER BY created_at, id
            LIMIT $6
            """,
            user_id,
            done,
            None if query is None else _like_pattern(query),
            after[0] if after else None,
            after[1] if after else None,
            limit + 1,
        )
    items = [todo_from_row(r) for r in rows[:limit]]
    next_cursor = encode_cursor(items[-1]) if len(rows) > limit else None
    return TodoPage(items=items, next_cursor=next_cursor, rev=rev)


async def changes_since(
    conn: asyncpg.Connection, user_id: uuid.UUID, since: int, limit: int
) -> ChangeBatch:
    # One statement, so one snapshot (the head and the changes agree) and one round trip
    # (a read-only transaction around two queries took four). A row per change, or one with
    # NULL todo columns when there is none; no row for an unknown user.
    rows = await conn.fetch(
        f"""
        SELECT u.rev AS head_rev, u.horizon AS head_horizon, t.*
        FROM users u
        LEFT JOIN LATERAL (
            SELECT {_TODO_COLUMNS} FROM todos
            WHERE user_id = u.id AND rev > $2 ORDER BY rev LIMIT $3
        ) t ON true
        WHERE u.id = $1
        """,
        user_id,
        since,
        limit + 1,
    )
    rev, horizon = (rows[0]["head_rev"], rows[0]["head_horizon"]) if rows else (0, 0)
    rows = [r for r in rows if r["id"] is not None]
    changes = [change_from_row(r) for r in rows[:limit]]
    more = len(rows) > limit
    # ``rev``: what this batch brings the reader up to, so ``since=rev`` continues.
    return ChangeBatch(changes, rev=changes[-1].rev if more else rev, more=more, horizon=horizon)


async def purge_tombstones(conn: asyncpg.Connection, older_than_seconds: float) -> int:
    """Forget old deletes, raising each user's horizon past them; forget old idempotency keys."""
    async with conn.transaction():
        purged = await conn.fetchval(
            """
            WITH gone AS (
                DELETE FROM todos
                WHERE deleted_at < now() - make_interval(secs => $1)
                RETURNING user_id, rev
            ), newest AS (
                SELECT user_id, max(rev) AS rev, count(*) AS n FROM gone GROUP BY user_id
            ), raised AS (
                UPDATE users SET horizon = greatest(users.horizon, newest.rev)
                FROM newest WHERE users.id = newest.user_id
                RETURNING newest.n
            )
            SELECT coalesce(sum(n), 0) FROM raised
            """,
            older_than_seconds,
        )
        await conn.execute(
            "DELETE FROM idempotency_keys WHERE created_at < now() - interval '24 hours'"
        )
    return int(purged)
