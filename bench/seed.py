"""Benchmark setup without the cost of argon2: users and device sessions written straight
into the database, tokens signed with the cluster's secret. (Registering 1,000 users and
logging in 2,000 devices through the API costs ~300 s of CPU in password hashing: that is
what the hashing is for, and not what the benchmarks measure.)"""

from __future__ import annotations

import uuid

import asyncpg

from nursery.service.passwords import _DUMMY_HASH
from nursery.service.tokens import TokenSigner
from nursery.stores.asyncio_thread import open_asyncio_thread


async def _insert(database_url: str, users: int, devices: int) -> list[list[str]]:
    conn = await asyncpg.connect(database_url)
    try:
        user_rows, session_rows, sessions = [], [], []
        for _ in range(users):
            user_id = uuid.uuid4()
            user_rows.append((user_id, f"bench-{user_id.hex[:16]}@example.com", _DUMMY_HASH))
            ids = [uuid.uuid4() for _ in range(devices)]
            session_rows += [(sid, user_id, f"device {d}") for d, sid in enumerate(ids)]
            sessions.append([str(sid) for sid in ids])
        await conn.copy_records_to_table("users", records=user_rows, columns=["id", "email", "password_hash"])
        await conn.copy_records_to_table("sessions", records=session_rows, columns=["id", "user_id", "device"])
        return sessions
    finally:
        await conn.close()


async def seed_users(database_url: str, secret: str, users: int, devices: int) -> list[list[str]]:
    """Tokens per user (one per device). Needs the schema (an instance has started)."""
    async with open_asyncio_thread() as aio:
        sessions = await aio.run(_insert, database_url, users, devices)
    signer = TokenSigner(secret, 30 * 86400)
    return [[signer.issue(sid) for sid in user_sessions] for user_sessions in sessions]
