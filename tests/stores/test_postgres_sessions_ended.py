"""PostgreSQL ending the store's sessions mid-operation (a restart, an administrator's
``pg_terminate_backend``, a failover) is the database being away: every failed operation is
StoreUnavailable (503, which clients retry), never an internal error, and no broken
connection is left in the pool. asyncpg sometimes reports such an ending as an
``InternalClientError`` with the connection stuck mid-operation (MagicStack/asyncpg#1069);
the store must not hand that connection out again."""

from __future__ import annotations

import asyncpg
import trio

from nursery.errors import StoreUnavailable
from nursery.models import TodoDraft, TodoPatch
from nursery.stores.asyncio_thread import open_asyncio_thread
from nursery.stores.postgres import open_postgres_store

ROUNDS = 60
WRITERS = 8
END_ALL_OTHER_SESSIONS = """
    SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
    WHERE pid <> pg_backend_pid() AND datname = current_database() AND backend_type = 'client backend'
"""


async def test_sessions_ended_mid_operation_are_unavailable_never_internal(
    database_url: str,
) -> None:
    failures: list[BaseException] = []
    async with (
        open_asyncio_thread() as aio,
        open_postgres_store(database_url, aio, pool_size=WRITERS, timeout=10) as store,
    ):
        user = (await store.create_user("ended@example.com", "hash")).id
        todo = (await store.create_todo(user, TodoDraft("t"), idempotency_key=None)).change.todo
        admin = await aio.run(asyncpg.connect, database_url)
        try:
            async def write(n: int) -> None:
                try:
                    if n % 2:
                        await store.update_todo(user, todo.id, TodoPatch({"title": f"v{n}"}))
                    else:
                        await store.create_todo(user, TodoDraft(f"n{n}"), idempotency_key=None)
                except Exception as exc:  # noqa: BLE001 - every failure is checked below
                    failures.append(exc)

            with trio.fail_after(60):
                for round_ in range(ROUNDS):
                    async with trio.open_nursery() as nursery:
                        for n in range(WRITERS):
                            nursery.start_soon(write, round_ * WRITERS + n)
                        await trio.sleep(0.002 * (round_ % 5))  # end them at varied points
                        await aio.run(admin.fetchval, END_ALL_OTHER_SESSIONS)
        finally:
            await aio.run(admin.close)

        assert failures, "no operation met a session's end: the test tested nothing"
        assert all(isinstance(exc, StoreUnavailable) for exc in failures), {
            f"{type(exc).__name__}: {exc} <- {exc.__cause__!r}" for exc in failures
        }
        # Every connection of the pool serves again (a broken one would fail here).
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                for n in range(WRITERS * 2):
                    nursery.start_soon(store.update_todo, user, todo.id, TodoPatch({"title": f"after{n}"}))
