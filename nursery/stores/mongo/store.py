"""``MongoStore``: the todo store contract and the audit log on MongoDB.

PyMongo's native async API (``AsyncMongoClient``) is asyncio-only: every public method hands
a whole operation, its transaction and retries included, to the asyncio thread
(``stores.asyncio_thread``) once. Motor is not used: it is deprecated. The queries live in
``_todos`` and ``_audit``, transactions in ``_transactions``; this module owns the client and
the timeout; ``_errors`` maps the driver's errors (none escapes).

Users and sessions stay in PostgreSQL; ``nursery.stores.split.SplitStore`` puts the two
together behind the one ``Store`` interface.

Cancellation: cancelling a caller cancels the asyncio task; the driver discards the
connection it was using and the server drops the unfinished transaction. Ids that are not
UUIDs name nothing (``NotFound`` or ``None``, as on PostgreSQL).
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, ClassVar, TypeVar

import trio
from pymongo import AsyncMongoClient

from nursery.errors import StoreUnavailable
from nursery.ids import row_id
from nursery.models import (
    TodoDraft,
    WriteResult,
)
from nursery.stores.asyncio_thread import AsyncioThread
from nursery.stores.audit import AuditEntry, DayFigures, storable
from nursery.stores.mongo import _audit, _schema, _todos
from nursery.stores.mongo._errors import DRIVER_ERRORS, translate
from nursery.stores.todo_methods import TodoMethods, fingerprint

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_DATABASE = "nursery"

Observe = Callable[[str, bool, float], None]  # (operation, succeeded, seconds)


class MongoStore(TodoMethods):
    """Todos (``TodoStore``) and the audit log (``AuditStore``) in one MongoDB database."""

    _queries: ClassVar[Any] = _todos  # the todo queries (``TodoMethods``)

    def __init__(
        self, db: Any, aio: AsyncioThread, timeout: float, observe: Observe | None = None
    ) -> None:
        self._db = db
        self._aio = aio
        self._timeout = timeout
        self._observe = observe
        self._owner = uuid.uuid4().hex  # this store's name on leases (the audit pruner's)

    @property
    def database(self) -> Any:
        """The driver's database object (asyncio side; for tests and tools)."""
        return self._db

    async def on_driver(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """``await fn(*args)`` where the driver runs (for tests and tools: ``database``)."""
        return await self._aio.run(fn, *args)

    async def _run(self, op: Callable[..., Awaitable[T]], *args: Any, name: str = "") -> T:
        started = time.perf_counter()
        ok = False
        try:
            with trio.fail_after(self._timeout):
                result: T = await self._aio.run(op, self._db, *args)
            ok = True
            return result
        except trio.TooSlowError as exc:
            raise StoreUnavailable("MongoDB did not answer in time") from exc
        except DRIVER_ERRORS as exc:
            raise translate(exc) from exc
        finally:
            if self._observe is not None:
                self._observe(name or op.__name__, ok, time.perf_counter() - started)

    # -- lifecycle ------------------------------------------------------------------------------

    async def ping(self) -> None:
        await self._run(_ping, name="ping")

    async def prepare(self) -> None:
        """Refuse a deployment without transactions; create collections and indexes
        (idempotent)."""
        await self._run(_prepare, name="prepare")

    async def aclose(self) -> None:
        with trio.move_on_after(self._timeout):
            await self._aio.run(self._db.client.close)

    def pool_use(self) -> tuple[int, int]:
        """The driver does not expose its pools' use: (0, 0)."""
        return 0, 0

    # -- todos ----------------------------------------------------------------------------------

    async def create_todo(
        self, user_id: str, draft: TodoDraft, *, idempotency_key: str | None = None
    ) -> WriteResult:
        uid = self._known(user_id, "user")
        apply = _todos.insert_todo(uid, str(row_id()), draft)
        return await self._run(
            _todos.write, uid, apply, idempotency_key,
            fingerprint("create", dataclasses.asdict(draft)), name="create_todo",
        )

    def _as_id(self, value: uuid.UUID) -> str:
        return str(value)  # ids are stored in their canonical text form

    # -- audit ----------------------------------------------------------------------------------

    async def append_audit(self, entries: list[AuditEntry]) -> None:
        entries = storable(entries)
        if entries:
            await self._run(_audit.append, entries, name="append_audit")

    async def recent_audit(self, user_id: str, limit: int) -> list[AuditEntry]:
        uid = self._id(user_id)
        return [] if uid is None else await self._run(_audit.recent, uid, limit, name="recent_audit")

    async def daily_figures(self, user_id: str, start: datetime, end: datetime) -> list[DayFigures]:
        uid = self._id(user_id)
        if uid is None:
            return []
        return await self._run(_audit.daily_figures, uid, start, end, name="daily_figures")

    async def prune_audit(self, before: datetime, limit: int) -> int | None:
        return await self._run(_audit.prune, self._owner, before, limit, name="prune_audit")


async def _ping(db: Any) -> None:
    await db.command("ping")


async def _prepare(db: Any) -> None:
    await _schema.check_deployment(db)
    await _schema.create_collections(db)
    await _schema.create_indexes(db)


def _client(url: str, pool_size: int, timeout: float) -> Any:
    # ``AsyncMongoClient`` is looked up at call time: tests put a driver-level double there.
    # The driver gives up well before our timeout, so its more telling error wins.
    millis = int(timeout * 500)
    return AsyncMongoClient(
        url,
        tz_aware=True,
        maxPoolSize=pool_size,
        serverSelectionTimeoutMS=millis,
        connectTimeoutMS=millis,
        appname="nursery",
    )


@asynccontextmanager
async def open_mongo_store(
    url: str,
    aio: AsyncioThread,
    *,
    database: str | None = None,
    pool_size: int = 10,
    timeout: float = 5.0,
    observe: Observe | None = None,
) -> AsyncIterator[MongoStore]:
    """Connect, check for a replica set, create the indexes, yield the store; close on exit.

    ``database``: the database to use; default the one named in ``url``, else ``nursery``.
    Raises ``StoreUnavailable`` when MongoDB cannot be reached within ``timeout``, the URL is
    not valid, or the deployment has no transactions.
    """
    try:
        client = await aio.run(_make_client, url, pool_size, timeout)
    except DRIVER_ERRORS as exc:
        raise StoreUnavailable(f"not a usable MongoDB URL: {exc}") from exc
    db = client[database] if database else client.get_default_database(DEFAULT_DATABASE)
    store = MongoStore(db, aio, timeout, observe)
    try:
        await store.prepare()
        yield store
    finally:
        with trio.CancelScope(shield=True):
            await store.aclose()


async def _make_client(url: str, pool_size: int, timeout: float) -> Any:
    """On the asyncio side: the client binds to the running loop."""
    return _client(url, pool_size, timeout)
