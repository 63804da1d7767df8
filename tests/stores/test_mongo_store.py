"""What only the MongoDB store has: transactions with bounded retries, the replica-set check,
indexes at startup, and the mapping of driver failures, exercised through ``MongoDouble``
(a TEST DOUBLE: it injects the transient errors a real server would raise under contention or
failover; see mongo_double.py for what it cannot confirm)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import httpx
import pytest
import trio

from nursery.errors import StoreUnavailable
from nursery.models import TodoDraft, TodoPatch
from nursery.stores.asyncio_thread import open_asyncio_thread
from nursery.stores.mongo import MongoStore, open_mongo_store
from nursery.stores.mongo._schema import COLLECTIONS, INDEXES
from nursery.stores.mongo._transactions import MAX_ATTEMPTS
from tests.harness import register
from tests.stores.backends import start_on_backend
from tests.stores.mongo_double import (
    TRANSIENT,
    UNKNOWN_COMMIT,
    DoubleServer,
    MongoDouble,
)


@pytest.fixture
def url(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setattr("nursery.stores.mongo.store.AsyncMongoClient", MongoDouble)
    yield f"mongodb://double-{uuid.uuid4().hex[:8]}/nursery"
    MongoDouble.reset()


@asynccontextmanager
async def opened(url: str, timeout: float = 5) -> AsyncIterator[MongoStore]:
    async with open_asyncio_thread() as aio, open_mongo_store(url, aio, timeout=timeout) as store:
        yield store


def user() -> str:
    return str(uuid.uuid4())


async def test_a_write_is_retried_through_transient_conflicts(url: str) -> None:
    with trio.fail_after(10):
        async with opened(url) as store:
            server = MongoDouble.server_for(url)
            ada = user()
            await store.create_todo(ada, TodoDraft("first"))
            server.inject("op", TRANSIENT, times=3)  # three write conflicts in a row
            before = server.transactions
            result = await store.create_todo(ada, TodoDraft("second"))
            assert result.change.rev == 2
            assert server.transactions - before == 4
            assert [c.rev for c in (await store.changes_since(ada, 0)).changes] == [1, 2]


async def test_a_transient_commit_failure_runs_the_transaction_again(url: str) -> None:
    with trio.fail_after(10):
        async with opened(url) as store:
            server = MongoDouble.server_for(url)
            ada = user()
            server.inject("commit", TRANSIENT)
            assert (await store.create_todo(ada, TodoDraft("a"))).change.rev == 1
            assert server.aborts >= 1
            assert len((await store.list_todos(ada)).items) == 1


async def test_an_unknown_commit_result_is_committed_again_not_rewritten(url: str) -> None:
    with trio.fail_after(10):
        async with opened(url) as store:
            server = MongoDouble.server_for(url)
            ada = user()
            server.inject("commit", UNKNOWN_COMMIT)
            before = server.transactions
            assert (await store.create_todo(ada, TodoDraft("a"))).change.rev == 1
            assert server.transactions - before == 1  # the body ran once
            page = await store.list_todos(ada)
            assert page.rev == 1 and len(page.items) == 1


async def test_conflicts_that_outlast_the_retries_are_unavailable_and_change_nothing(url: str) -> None:
    with trio.fail_after(10):
        async with opened(url) as store:
            server = MongoDouble.server_for(url)
            ada = user()
            todo = (await store.create_todo(ada, TodoDraft("a"))).change.todo
            assert todo is not None
            server.inject("op", TRANSIENT, times=MAX_ATTEMPTS)
            with pytest.raises(StoreUnavailable):
                await store.update_todo(ada, todo.id, TodoPatch({"title": "b"}))
            assert (await store.get_todo(ada, todo.id)) == todo
            assert (await store.list_todos(ada)).rev == 1


async def test_startup_refuses_a_standalone_server(url: str) -> None:
    MongoDouble.server_for(url).standalone = True
    with trio.fail_after(10):
        async with open_asyncio_thread() as aio:
            with pytest.raises(StoreUnavailable, match="replica set"):
                async with open_mongo_store(url, aio):
                    pass


async def test_startup_fails_when_mongodb_is_unreachable(url: str) -> None:
    MongoDouble.server_for(url).unreachable = True
    with trio.fail_after(10):
        async with open_asyncio_thread() as aio:
            with pytest.raises(StoreUnavailable):
                async with open_mongo_store(url, aio):
                    pass


async def test_collections_and_indexes_are_created_at_startup_idempotently(url: str) -> None:
    with trio.fail_after(10):
        for _ in range(2):  # a second instance starting finds them there
            async with opened(url) as store:
                names = await store.on_driver(store.database.list_collection_names)
                assert set(COLLECTIONS) <= set(names)
                for collection, indexes in INDEXES.items():
                    info = await store.on_driver(store.database[collection].index_information)
                    assert {i.document["name"] for i in indexes} <= set(info)


async def test_an_outage_and_a_hang_become_store_unavailable(url: str) -> None:
    with trio.fail_after(10):
        async with opened(url, timeout=0.3) as store:
            server: DoubleServer = MongoDouble.server_for(url)
            ada = user()
            server.unreachable = True
            with pytest.raises(StoreUnavailable):
                await store.create_todo(ada, TodoDraft("a"))
            with pytest.raises(StoreUnavailable):
                await store.ping()
            server.unreachable = False
            server.hang = True
            with pytest.raises(StoreUnavailable, match="in time"):
                await store.list_todos(ada)
            server.hang = False
            await store.ping()
            assert (await store.create_todo(ada, TodoDraft("a"))).change.rev == 1


async def test_store_operations_are_observed_by_name(url: str) -> None:
    seen: list[tuple[str, bool]] = []
    with trio.fail_after(10):
        async with open_asyncio_thread() as aio, open_mongo_store(
            url, aio, observe=lambda name, ok, _: seen.append((name, ok))
        ) as store:
            await store.create_todo(user(), TodoDraft("a"))
            await store.get_todo(user(), "not-a-uuid")  # answered without a crossing
    assert ("prepare", True) in seen and ("create_todo", True) in seen
    assert not any(name == "get_todo" for name, _ in seen)


async def test_the_double_catches_an_operation_outside_the_transaction(url: str) -> None:
    """Guards the double itself: forgetting ``session=`` inside a transaction must fail."""
    with trio.fail_after(10):
        async with opened(url) as store:
            db = store.database

            async def forgetful() -> None:
                async with db.client.start_session() as session:
                    await session.start_transaction()
                    await db.todos.find_one({})  # no session=

            with pytest.raises(AssertionError, match="session"):
                await store.on_driver(forgetful)


async def test_an_instance_on_mongodb_is_unready_and_answers_503_while_it_is_away(
    nursery: trio.Nursery, database_url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The wiring: with ``mongo_url`` set, readiness needs both databases, and a MongoDB
    outage is a 503 with Retry-After on the todo routes, while accounts (PostgreSQL) work."""
    with trio.fail_after(30):
        instance = await start_on_backend("mongo-double", nursery, database_url, monkeypatch)
        server = MongoDouble.server_for(instance.settings.mongo_url or "")
        async with httpx.AsyncClient(base_url=instance.url, timeout=10) as client:
            user = await register(client, instance.url)
            assert (await client.get("/readyz")).status_code == 200
            server.unreachable = True
            assert (await client.get("/readyz")).status_code == 503
            r = await client.post("/api/todos", json={"title": "a"}, headers=user.headers)
            assert r.status_code == 503 and r.headers["Retry-After"]
            assert r.json()["error"]["code"] == "store_unavailable"
            assert (await client.get("/api/me", headers=user.headers)).status_code == 200
            server.unreachable = False
            assert (await client.get("/readyz")).status_code == 200
            r = await client.post("/api/todos", json={"title": "a"}, headers=user.headers)
            assert r.status_code == 201 and r.json()["todo"]["rev"] == 1
        instance.stop()
