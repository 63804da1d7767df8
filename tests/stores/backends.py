"""The backends of the store contract suite, and instances on them (see conftest.py).

- ``postgres``: a real PostgreSQL (a fresh database per test). Always.
- ``mongo-double``: ``MongoDouble`` (tests/stores/mongo_double.py), mongomock behind PyMongo's
  async API. A TEST DOUBLE, not MongoDB: it runs every MongoDB code path, but what it cannot
  confirm (transactions under real concurrency, snapshot reads, ...) is listed there.
- ``mongo``: a real MongoDB replica set at ``NURSERY_TEST_MONGO_URL`` (a fresh database per
  test). Skipped when the variable is unset.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import pytest

from nursery.stores.asyncio_thread import AsyncioThread
from nursery.stores.audit import AuditStore
from nursery.stores.base import TodoStore
from tests.stores.mongo_double import MongoDouble

MONGO_URL = os.environ.get("NURSERY_TEST_MONGO_URL", "")
BACKENDS = [
    pytest.param("postgres", id="postgres"),
    pytest.param("mongo-double", id="mongo-double"),
    pytest.param(
        "mongo", id="mongo",
        marks=pytest.mark.skipif(not MONGO_URL, reason="NURSERY_TEST_MONGO_URL is not set"),
    ),
]


@dataclass
class Stores:
    todos: TodoStore
    audit: AuditStore
    new_user: Callable[[], Awaitable[str]]  # an id the todo store accepts as a user
    engine: Any = None  # the backend's own handle, for backend-specific checks
    database_url: str | None = None  # PostgreSQL's, for a connection of the test's own
    aio: AsyncioThread | None = None  # where the asyncio drivers run, for the test's own calls


@dataclass
class Backend:
    name: str
    open: Callable[[], AbstractAsyncContextManager[Stores]]


async def random_user() -> str:
    """Users live in PostgreSQL; the MongoDB store takes any user id it is given."""
    return str(uuid.uuid4())


def instance_mongo_url(name: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """``mongo_url`` for instances of one test on backend ``name`` (``mongo-double``: the double
    put in the driver's place; ``mongo``: a fresh database on the real server)."""
    if name == "mongo-double":
        monkeypatch.setattr("nursery.stores.mongo.store.AsyncMongoClient", MongoDouble)
        return f"mongodb://double-{uuid.uuid4().hex[:8]}/nursery"
    base, _, query = MONGO_URL.partition("?")
    scheme, _, rest = base.partition("://")
    host = rest.split("/", 1)[0]
    return f"{scheme}://{host}/nursery_test_{uuid.uuid4().hex[:12]}" + (f"?{query}" if query else "")


async def start_on_backend(
    name: str,
    nursery: Any,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    **overrides: Any,
) -> Any:
    """A real nursery instance (tests/harness.py) with todos and the audit log on backend
    ``name``: ``postgres`` (no MongoDB), ``mongo-double`` or ``mongo`` (``mongo_url`` set)."""
    from tests.harness import start_instance

    if name != "postgres":
        overrides["mongo_url"] = instance_mongo_url(name, monkeypatch)
    return await start_instance(nursery, database_url, **overrides)
