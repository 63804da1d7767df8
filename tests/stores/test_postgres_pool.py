"""The PostgreSQL store's pool hands connections back without a reset query (store.py): a
write cancelled inside its transaction must still leave nothing behind on the connection."""

from __future__ import annotations

import uuid

import asyncpg
import trio

from nursery.models import TodoDraft
from nursery.stores.asyncio_thread import open_asyncio_thread
from nursery.stores.postgres import open_postgres_store


async def test_a_write_cancelled_inside_its_transaction_leaves_the_connection_clean(
    database_url: str,
) -> None:
    async with (
        open_asyncio_thread() as aio,
        open_postgres_store(database_url, aio, pool_size=1) as store,
    ):
        user = (await store.create_user("cancelled-write@example.com", "hash")).id
        await store.create_todo(user, TodoDraft("first"), idempotency_key="k1")

        # Another connection holds the user's row: the keyed write (BEGIN, bump, insert,
        # COMMIT) blocks at the bump, inside its transaction, until it is cancelled.
        blocker = await aio.run(asyncpg.connect, database_url)
        try:
            tx = blocker.transaction()
            await aio.run(tx.start)
            await aio.run(
                blocker.execute, "SELECT 1 FROM users WHERE id = $1 FOR UPDATE", uuid.UUID(user)
            )
            with trio.move_on_after(0.5) as scope:
                await store.create_todo(user, TodoDraft("cancelled"), idempotency_key="k2")
            assert scope.cancelled_caught
            await aio.run(tx.rollback)
        finally:
            await aio.run(blocker.close)

        # The pool's only connection is reused: not inside the dead transaction, and the
        # cancelled write took no revision.
        with trio.fail_after(5):
            after = await store.create_todo(user, TodoDraft("after"), idempotency_key="k3")
        assert after.change.rev == 2
        batch = await store.changes_since(user, 0)
        assert [c.todo.title for c in batch.changes if c.todo] == ["first", "after"]
