"""``backend``: the todo + audit store contract's backends, one test id each (backends.py):
``postgres``, ``mongo-double`` (a test double, not MongoDB), ``mongo`` (a real replica set at
``NURSERY_TEST_MONGO_URL``; skipped without it).

A test opens its backend with ``async with backend.open() as stores``: that opens the
asyncio thread the drivers run on too (``stores.aio``).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest

from nursery.stores.asyncio_thread import open_asyncio_thread
from nursery.stores.mongo import open_mongo_store
from nursery.stores.postgres import open_postgres_store
from nursery.stores.postgres.audit import PostgresAuditStore
from tests.stores.backends import BACKENDS, MONGO_URL, Backend, Stores, random_user
from tests.stores.mongo_double import MongoDouble


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    name: str = request.param
    if name == "postgres":
        url = request.getfixturevalue("database_url")

        @asynccontextmanager
        async def open_postgres() -> AsyncIterator[Stores]:
            async with open_asyncio_thread() as aio, open_postgres_store(url, aio, timeout=5) as store:
                counter = iter(range(1_000_000))

                async def new_user() -> str:
                    user = await store.create_user(f"u{next(counter)}@example.com", "hash")
                    return user.id

                yield Stores(store, PostgresAuditStore(store), new_user, store, url, aio)

        yield Backend(name, open_postgres)
        return

    if name == "mongo-double":
        monkeypatch = request.getfixturevalue("monkeypatch")
        monkeypatch.setattr("nursery.stores.mongo.store.AsyncMongoClient", MongoDouble)
        url, database = f"mongodb://double-{uuid.uuid4().hex[:8]}/nursery", None
    else:
        url, database = MONGO_URL, f"nursery_test_{uuid.uuid4().hex[:12]}"

    @asynccontextmanager
    async def open_mongo() -> AsyncIterator[Stores]:
        async with (
            open_asyncio_thread() as aio,
            open_mongo_store(url, aio, database=database, timeout=10) as store,
        ):
            try:
                yield Stores(store, store, random_user, store, aio=aio)
            finally:
                if database is not None:
                    await aio.run(store.database.client.drop_database, database)

    yield Backend(name, open_mongo)
    MongoDouble.reset()
