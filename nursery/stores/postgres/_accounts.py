"""Queries for users and device sessions. Asyncio side: each function is one store
operation, run on a pooled connection by ``PostgresStore``."""

from __future__ import annotations

import uuid

import asyncpg

from nursery.errors import Conflict
from nursery.models import Credentials, Session, User

_SESSION_COLUMNS = "id, user_id, device, created_at, last_seen_at, revoked_at"
# last_seen_at is written at most this often per session: a read per request, not a write.
_TOUCH_INTERVAL = "30 seconds"


def user_from_row(row: asyncpg.Record) -> User:
    return User(id=str(row["id"]), email=row["email"], created_at=row["created_at"])


def session_from_row(row: asyncpg.Record) -> Session:
    return Session(
        id=str(row["id"]),
        user_id=str(row["user_id"]),
        device=row["device"],
        created_at=row["created_at"],
        last_seen_at=row["last_seen_at"],
        revoked_at=row["revoked_at"],
    )


async def create_user(conn: asyncpg.Connection, email: str, password_hash: str) -> User:
    try:
        row = await conn.fetchrow(
            "INSERT INTO users (id, email, password_hash) VALUES ($1, $2, $3)"
            " RETURNING id, email, created_at",
            uuid.uuid4(),
            email,
            password_hash,
        )
    except asyncpg.UniqueViolationError as exc:
        raise Conflict("this email is already registered", details={"field": "email"}) from exc
    return user_from_row(row)


async def credentials(conn: asyncpg.Connection, email: str) -> Credentials | None:
    row = await conn.fetchrow(
        "SELECT id, email, created_at, password_hash FROM users WHERE email = $1", email
    )
    return None if row is None else Credentials(user_from_row(row), row["password_hash"])


async def get_user(conn: asyncpg.Connection, user_id: uuid.UUID) -> User | None:
    row = await conn.fetchrow("SELECT id, email, created_at FROM users WHERE id = $1", user_id)
    return None if row is None else user_from_row(row)


async def create_session(conn: asyncpg.Connection, user_id: uuid.UUID, device: str) -> Session:
    row = await conn.fetchrow(
        f"INSERT INTO sessions (id, user_id, device) VALUES ($1, $2, $3)"
        f" RETURNING {_SESSION_COLUMNS}",
        uuid.uuid4(),
        user_id,
        device,
    )
    return session_from_row(row)


async def live_session(conn: asyncpg.Connection, session_id: uuid.UUID) -> Session | None:
    # One statement: refresh last_seen_at when stale, and return the live session either way.
    row = await conn.fetchrow(
        f"""
        WITH touched AS (
            UPDATE sessions SET last_seen_at = now()
            WHERE id = $1 AND revoked_at IS NULL
              AND last_seen_at < now() - interval '{_TOUCH_INTERVAL}'
            RETURNING {_SESSION_COLUMNS}
        )
        SELECT {_SESSION_COLUMNS} FROM touched
        UNION ALL
        SELECT {_SESSION_COLUMNS} FROM sessions
        WHERE id = $1 AND revoked_at IS NULL AND NOT EXISTS (SELECT 1 FROM touched)
        """,
        session_id,
    )
    return None if row is None else session_from_row(row)


async def list_sessions(conn: asyncpg.Connection, user_id: uuid.UUID) -> list[Session]:
    rows = await conn.fetch(
        f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE user_id = $1 AND revoked_at IS NULL"
        " ORDER BY created_at, id",
        user_id,
    )
    return [session_from_row(r) for r in rows]


async def revoke_sessions(
    conn: asyncpg.Connection,
    user_id: uuid.UUID,
    only: uuid.UUID | None,
    keep: uuid.UUID | None,
) -> list[Session]:
    rows = await conn.fetch(
        f"""
        UPDATE sessions SET revoked_at = now()
        WHERE user_id = $1 AND revoked_at IS NULL
          AND ($2::uuid IS NULL OR id = $2) AND ($3::uuid IS NULL OR id <> $3)
        RETURNING {_SESSION_COLUMNS}
        """,
        user_id,
        only,
        keep,
    )
    return [session_from_row(r) for r in rows]
