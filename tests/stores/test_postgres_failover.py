"""The store on a replicated PostgreSQL (etcd + three Patroni nodes, synchronous_mode and
synchronous_mode_strict on: tests/ha_servers.py; with strict mode a primary never commits
alone, so a third node is what lets writes go on once one node is lost) while the primary goes away: writers with idempotency keys keep writing
as clients do (a 503 is retried with the same key), and afterwards every acknowledged write
is there exactly once.

- the primary's node killed (Patroni and PostgreSQL, SIGKILL): writes succeed again within
  15 s, nothing acknowledged lost or duplicated;
- a planned switchover under load: no write fails (the store's own retry covers it);
- the primary's node hung (SIGSTOP) and continued after the standby took over: it never
  acknowledges a write again, and rejoins as the standby.

One cluster for the module; each test leaves it with a leader and a sync standby.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import asyncpg
import pytest
import trio

from nursery.cluster import _patroni
from nursery.errors import StoreUnavailable
from nursery.models import TodoDraft
from nursery.stores.asyncio_thread import AsyncioThread, open_asyncio_thread
from nursery.stores.postgres import PostgresStore, open_postgres_store
from tests.ha_servers import PatroniCluster, remove
from tests.servers import scratch_dir

WRITERS = 4
FAILOVER_BOUND = 15.0  # the bound on writes failing after the primary is lost
CLIENT_PAUSE = 0.1  # a client's pause before retrying a 503
# An operation's budget, retries included: longer than a switchover's pause (~5 s with
# Patroni's loop_wait of 1 s: demote, promote, a standby re-attached), as `cluster up --ha`
# sets NURSERY_DB_TIMEOUT.
STORE_TIMEOUT = 10.0


@pytest.fixture(scope="module")
def patroni() -> Iterator[PatroniCluster]:
    directory = scratch_dir("nursery-patroni-")
    directory.chmod(0o755)  # PostgreSQL runs as the postgres user (as root: conftest's open_dir)
    cluster = PatroniCluster(directory)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        remove(directory)


@dataclass
class Load:
    """What the writers saw."""

    attempted: int = 0
    failed: int = 0  # 503s the client then retried
    errors: set[str] = field(default_factory=set)
    acknowledged: list[str] = field(default_factory=list)
    ack_times: list[float] = field(default_factory=list)
    longest_write: float = 0.0  # one write, the store's own retries included

    def longest_gap(self, since: float) -> float:
        """The longest time after ``since`` without any acknowledged write."""
        times = sorted(t for t in self.ack_times if t >= since)
        points = [since, *times]
        return max((b - a for a, b in zip(points, points[1:], strict=False)), default=0.0)


async def _writer(store: PostgresStore, user: str, prefix: str, load: Load,
                  stop: trio.Event) -> None:
    n = 0
    while not stop.is_set():
        key = f"{prefix}-{n}"
        began = trio.current_time()
        while True:
            load.attempted += 1
            try:
                await store.create_todo(user, TodoDraft(key), idempotency_key=key)
                break
            except StoreUnavailable as exc:
                load.failed += 1
                load.errors.add(f"{exc} <- {exc.__cause__!r}")
                await trio.sleep(CLIENT_PAUSE)
        load.acknowledged.append(key)
        load.ack_times.append(trio.current_time())
        load.longest_write = max(load.longest_write, trio.current_time() - began)
        n += 1


@pytest.fixture
async def store(patroni: PatroniCluster) -> AsyncIterator[tuple[PostgresStore, AsyncioThread]]:
    async with (
        open_asyncio_thread() as aio,
        open_postgres_store(patroni.url, aio, pool_size=WRITERS + 2, timeout=STORE_TIMEOUT,
                            connect_timeout=1.0) as opened,
    ):
        yield opened, aio


async def _titles(aio: AsyncioThread, url: str) -> dict[str, int]:
    async def read() -> dict[str, int]:
        conn = await asyncpg.connect(url, timeout=5)
        try:
            rows = await conn.fetch("SELECT title, count(*) AS n FROM todos GROUP BY title")
            return {r["title"]: r["n"] for r in rows}
        finally:
            await conn.close()
    return await aio.run(read)


async def _under_load(store: PostgresStore, fault: object, *, after: float = 1.0,
                      settle: float = 2.0) -> tuple[Load, float]:
    """Run the writers; ``after`` seconds in, call ``fault()`` (in a thread); stop the writers
    once writes have succeeded for ``settle`` seconds after it. Returns the load and when
    the fault began."""
    load, stop = Load(), trio.Event()
    user = (await store.create_user(f"w{time.time_ns()}@example.com", "hash")).id
    async with trio.open_nursery() as nursery:
        for i in range(WRITERS):
            nursery.start_soon(_writer, store, user, f"{user[:8]}-{i}", load, stop)
        await trio.sleep(after)
        assert load.acknowledged, "no write succeeded before the fault"
        began = trio.current_time()
        await trio.to_thread.run_sync(fault)  # type: ignore[arg-type]
        while not load.ack_times or load.ack_times[-1] < trio.current_time() - 0.5 or (
                trio.current_time() - began < settle):
            await trio.sleep(0.05)
        done_at = trio.current_time()
        while trio.current_time() - done_at < settle:
            await trio.sleep(0.05)
        stop.set()
    return load, began


def _assert_exactly_once(load: Load, titles: dict[str, int]) -> None:
    lost = [k for k in load.acknowledged if titles.get(k, 0) == 0]
    duplicated = {k: n for k, n in titles.items() if n > 1}
    assert not lost, f"{len(lost)} acknowledged writes lost, e.g. {lost[:3]}"
    assert not duplicated, f"duplicated writes: {list(duplicated.items())[:3]}"


async def test_writes_survive_the_loss_of_the_primary(
    patroni: PatroniCluster, store: tuple[PostgresStore, AsyncioThread],
) -> None:
    db, aio = store
    old = patroni.leader()
    assert old is not None
    with trio.fail_after(90):
        load, began = await _under_load(db, lambda: patroni.kill_node(old))
        new = patroni.leader()
        assert new not in (None, old)
        gap = load.longest_gap(began)
        print(f"\nprimary killed: writes back after {gap:.2f} s; attempted {load.attempted}, "
              f"failed (retried by the client) {load.failed}, store retries {db.retries}, "
              f"acknowledged {len(load.acknowledged)}")
        assert gap < FAILOVER_BOUND
        _assert_exactly_once(load, await _titles(aio, patroni.url))
        patroni.start_node(old)  # it rejoins as the standby
        await trio.to_thread.run_sync(patroni.wait_for, patroni._healthy, 60.0, "rejoin")


async def test_a_planned_switchover_fails_no_write(
    patroni: PatroniCluster, store: tuple[PostgresStore, AsyncioThread],
) -> None:
    db, aio = store
    old = patroni.leader()
    assert old is not None
    with trio.fail_after(60):
        load, _ = await _under_load(
            db, lambda: _patroni.switchover(patroni.node(old).api_url, leader=old))
        assert patroni.leader() not in (None, old)
        print(f"\nswitchover: longest write {load.longest_write:.2f} s; attempted "
              f"{load.attempted}, failed {load.failed}, store retries {db.retries}")
        assert load.failed == 0, load.errors
        _assert_exactly_once(load, await _titles(aio, patroni.url))
        await trio.to_thread.run_sync(patroni.wait_for, patroni._healthy, 60.0, "rejoin")


async def test_a_hung_primary_never_takes_a_write_after_the_promotion(
    patroni: PatroniCluster, store: tuple[PostgresStore, AsyncioThread],
) -> None:
    db, aio = store
    old = patroni.leader()
    assert old is not None
    old_url = patroni.node_url(old)
    with trio.fail_after(90):
        def hang() -> None:
            patroni.freeze_node(old)
            patroni.wait_for(lambda: patroni.leader() not in (None, old), 30.0, "promotion")

        load, began = await _under_load(db, hang)
        print(f"\nprimary hung: writes back after {load.longest_gap(began):.2f} s; failed "
              f"{load.failed}, store retries {db.retries}")
        patroni.thaw_node(old)
        # Until Patroni has made it a standby, every write offered straight to it must fail
        # (read-only, refused, or never acknowledged: its commits wait for a standby that
        # now follows the other node).
        accepted = await aio.run(_offer_writes_until_standby, old_url)
        assert accepted == 0
        _assert_exactly_once(load, await _titles(aio, patroni.url))
        await trio.to_thread.run_sync(patroni.wait_for, patroni._healthy, 60.0, "rejoin")
        assert patroni.leader() != old


async def _offer_writes_until_standby(url: str) -> int:
    accepted = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            conn = await asyncpg.connect(url, timeout=1)
        except (TimeoutError, OSError, asyncpg.PostgresError):
            await asyncio.sleep(0.1)
            continue
        try:
            if await conn.fetchval("SELECT pg_is_in_recovery()", timeout=1):
                return accepted
            await conn.execute("CREATE TABLE IF NOT EXISTS split_brain_probe (n int)", timeout=1)
            await conn.execute("INSERT INTO split_brain_probe VALUES (1)", timeout=1)
            accepted += 1
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            await asyncio.sleep(0.1)
        finally:
            conn.terminate()
    raise AssertionError("the old primary never became a standby")
