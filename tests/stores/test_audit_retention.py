"""Audit retention on every backend (``AuditStore.prune_audit`` and the rounds of
``nursery.service.retention.AuditRetention``): the oldest entries before the cut-off go, a
batch at a time, newer ones stay; and while another instance holds the pruning lock (a real
advisory lock held by a connection of the test; a lease document on MongoDB) nothing is
deleted and the round steps aside."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
import trio

from nursery.service.retention import AuditRetention, Round
from nursery.stores.audit import LOGIN, AuditEntry, to_millisecond
from nursery.stores.mongo._audit import PRUNE_LEASE
from nursery.stores.postgres._audit import PRUNE_LOCK_ID
from tests.stores.backends import Backend, Stores

NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)
ADA = str(uuid.uuid4())


def entries(count: int, days_ago: float) -> list[AuditEntry]:
    """``count`` logins ``days_ago`` days before NOW, one minute apart (the first oldest)."""
    start = NOW - timedelta(days=days_ago)
    return [
        AuditEntry(id=str(uuid.uuid4()), user_id=ADA, kind=LOGIN,
                   at=to_millisecond(start + timedelta(minutes=i)), seq=i,
                   session_id=str(uuid.uuid4()), device="d", instance="test")
        for i in range(count)
    ]


async def kept(stores: Stores) -> set[str]:
    return {e.id for e in await stores.audit.recent_audit(ADA, 1000)}


@asynccontextmanager
async def another_pruner(backend: Backend, stores: Stores) -> AsyncIterator[None]:
    """Another instance in the middle of a prune batch, for the body of the block."""
    aio = stores.aio
    assert aio is not None
    if backend.name == "postgres":
        assert stores.database_url
        conn = await aio.run(asyncpg.connect, stores.database_url, timeout=5)
        try:
            await aio.run(conn.execute, "BEGIN")
            await aio.run(conn.execute, f"SELECT pg_advisory_xact_lock({PRUNE_LOCK_ID})")
            yield
        finally:
            await aio.run(conn.close, timeout=5)
        return
    leases = stores.engine.database.leases
    await aio.run(
            leases.insert_one,
        {"_id": PRUNE_LEASE, "owner": "another instance", "until": datetime.now(UTC) + timedelta(minutes=1)})
    try:
        yield
    finally:
        await aio.run(leases.delete_one, {"_id": PRUNE_LEASE})


async def test_prune_deletes_the_oldest_entries_before_the_cutoff_one_batch_at_a_time(
    backend: Backend,
) -> None:
    with trio.fail_after(20):
        async with backend.open() as stores:
            old, new = entries(5, days_ago=10), entries(2, days_ago=1)
            await stores.audit.append_audit(new + old)
            cutoff = NOW - timedelta(days=5)
            assert await stores.audit.prune_audit(cutoff, 2) == 2
            assert await kept(stores) == {e.id for e in old[2:] + new}  # the two oldest went
            assert await stores.audit.prune_audit(cutoff, 10) == 3
            assert await stores.audit.prune_audit(cutoff, 10) == 0
            assert await kept(stores) == {e.id for e in new}


async def test_rounds_go_through_a_backlog_in_batches_and_keep_recent_entries(backend: Backend) -> None:
    with trio.fail_after(20):
        async with backend.open() as stores:
            old, new = entries(7, days_ago=31), entries(3, days_ago=29)
            await stores.audit.append_audit(old + new)
            retention = AuditRetention(stores.audit, days=30, batch_size=3, pause=0, clock=lambda: NOW)
            assert await retention.prune_now() == Round(deleted=7, batches=3, yielded=False)
            assert await kept(stores) == {e.id for e in new}
            assert await retention.prune_now() == Round(deleted=0, batches=1, yielded=False)
            assert retention.pruned == 7


async def test_nothing_is_deleted_while_another_instance_prunes(backend: Backend) -> None:
    with trio.fail_after(20):
        async with backend.open() as stores:
            old = entries(4, days_ago=100)
            await stores.audit.append_audit(old)
            retention = AuditRetention(stores.audit, days=30, batch_size=2, pause=0, clock=lambda: NOW)
            async with another_pruner(backend, stores):
                assert await stores.audit.prune_audit(NOW, 10) is None
                assert await retention.prune_now() == Round(deleted=0, batches=0, yielded=True)
                assert await kept(stores) == {e.id for e in old}
            # The other one is done (its lock released): this one prunes again.
            assert await retention.prune_now() == Round(deleted=4, batches=3, yielded=False)


async def test_a_lease_left_by_a_dead_pruner_expires(backend: Backend) -> None:
    if backend.name == "postgres":
        pytest.skip("PostgreSQL's advisory lock ends with its holder's transaction: no lease")
    with trio.fail_after(20):
        async with backend.open() as stores:
            await stores.audit.append_audit(entries(3, days_ago=100))
            leases = stores.engine.database.leases
            aio = stores.aio
            assert aio is not None
            await aio.run(
            leases.insert_one,
                {"_id": PRUNE_LEASE, "owner": "a dead instance",
                 "until": datetime.now(UTC) - timedelta(seconds=1)})
            assert await stores.audit.prune_audit(NOW, 10) == 3
            # and it let go of the lease once the batch was done
            assert await aio.run(leases.count_documents, {}) == 0
