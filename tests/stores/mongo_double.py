"""``MongoDouble``: a driver-level TEST DOUBLE for MongoDB, not MongoDB.

It stands in for ``pymongo.AsyncMongoClient`` (tests monkeypatch
``nursery.stores.mongo.store.AsyncMongoClient``): the same async methods nursery calls, with
mongomock's in-memory engine evaluating the queries, updates, indexes and aggregation
pipelines. No MongoDB server can be installed on these machines; this lets every MongoDB code
path of nursery run in CI: queries, the transaction and retry logic, error mapping, startup
checks. Only the surface nursery uses is implemented.

Transactions are EMULATED, not enforced: a transaction holds a lock on the whole double (so
transactions run one at a time, serializably, stronger than MongoDB's snapshot isolation) and
an abort restores a deep copy taken at its start. The double cannot show:

- how a real server detects write conflicts between concurrent transactions (here they never
  overlap), nor that those conflicts carry ``TransientTransactionError`` in practice: the
  double raises such errors only where a test injects them (``DoubleServer.inject``);
- snapshot read concern, majority write concern, durability, failover, replica-set elections,
  ``UnknownTransactionCommitResult`` from a real broken connection;
- that the indexes' options (partial filters) are accepted and used by a real server, that
  the aggregation operators behave identically to the server's (mongomock reimplements them),
  or that BSON dates keep only milliseconds (mongomock does round them, like the server).

Those are confirmed only against a real replica set (``NURSERY_TEST_MONGO_URL``).

What the double does check beyond mongomock: an operation issued WITHOUT the transaction's
session while that task has a transaction open fails loudly (on a real server it would run
outside the transaction); a transaction left open blocks every other operation.
"""

from __future__ import annotations

import asyncio
import collections
import copy
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import urlsplit

import mongomock
from pymongo.errors import OperationFailure, ServerSelectionTimeoutError

TRANSIENT = "TransientTransactionError"
UNKNOWN_COMMIT = "UnknownTransactionCommitResult"
POLL = 0.0005  # seconds between looks at the lock (works across asyncio loops)


@dataclass
class Fault:
    where: str  # "op": the next operation inside a transaction; "commit": the next commit
    label: str
    times: int


@dataclass
class DoubleServer:
    """One emulated deployment, shared by every client with the same host in its URL."""

    engine: Any = field(default_factory=lambda: mongomock.MongoClient(tz_aware=True))
    standalone: bool = False  # answer ``hello`` without setName: no transactions
    unreachable: bool = False  # every operation: ServerSelectionTimeoutError
    hang: bool = False  # every operation waits forever (the store's timeout must fire)
    faults: list[Fault] = field(default_factory=list)
    owner: Any = None  # the session whose transaction is open
    owner_task: Any = None
    transactions: int = 0  # started, for tests
    commits: int = 0
    aborts: int = 0

    def inject(self, where: str, label: str = TRANSIENT, times: int = 1) -> None:
        """Fail the next ``times`` operations inside a transaction (``where="op"``, a
        WriteConflict) or commits (``where="commit"``) with ``label``."""
        self.faults.append(Fault(where, label, times))

    def take_fault(self, where: str) -> Fault | None:
        for fault in self.faults:
            if fault.where == where and fault.times > 0:
                fault.times -= 1
                return fault
        return None

    async def enter(self, session: Any) -> None:
        """Wait for the right to run one operation (see the module docstring)."""
        if self.unreachable:
            raise ServerSelectionTimeoutError("double: no server reachable")
        if self.hang:
            await asyncio.sleep(3600)
        if session is not None and session is self.owner:
            fault = self.take_fault("op")
            if fault is not None:
                raise OperationFailure(
                    "WriteConflict (injected)", code=112, details={"errorLabels": [fault.label]}
                )
            return
        if self.owner is not None and self.owner_task is asyncio.current_task():
            raise AssertionError("an operation without the open transaction's session")
        while self.owner is not None:
            await asyncio.sleep(POLL)

    def snapshot(self) -> dict[tuple[str, str], Any]:
        store: Any = self.engine._store
        return {
            (d, c): copy.deepcopy(cs._documents)
            for d, ds in store._databases.items()
            for c, cs in ds._collections.items()
        }

    def restore(self, snapshot: dict[tuple[str, str], Any]) -> None:
        store: Any = self.engine._store
        for d, ds in store._databases.items():
            for c, cs in ds._collections.items():
                cs._documents = snapshot.get((d, c), collections.OrderedDict())


class MongoDouble:
    """Stands in for ``pymongo.AsyncMongoClient(url, **options)``."""

    servers: ClassVar[dict[str, DoubleServer]] = {}

    def __init__(self, url: str = "mongodb://double/", **options: Any) -> None:
        parts = urlsplit(url)
        self.server = self.servers.setdefault(parts.netloc, DoubleServer())
        self._default = parts.path.lstrip("/") or None
        self.options = options
        self.closed = False

    @classmethod
    def server_for(cls, url: str) -> DoubleServer:
        return cls.servers.setdefault(urlsplit(url).netloc, DoubleServer())

    @classmethod
    def reset(cls) -> None:
        cls.servers.clear()

    def __getitem__(self, name: str) -> _Database:
        return _Database(self, name)

    def get_default_database(self, default: str | None = None) -> _Database:
        return self[self._default or default or "test"]

    @property
    def admin(self) -> _Database:
        return self["admin"]

    def start_session(self, **_: Any) -> _Session:
        return _Session(self.server)

    async def drop_database(self, name: str) -> None:
        await self.server.enter(None)
        self.server.engine.drop_database(name)

    async def close(self) -> None:
        self.closed = True


class _Database:
    def __init__(self, client: MongoDouble, name: str) -> None:
        self.client = client
        self.name = name

    def __getitem__(self, name: str) -> _Collection:
        return _Collection(self.client.server, self.client.server.engine[self.name][name])

    def __getattr__(self, name: str) -> _Collection:
        if name.startswith("_"):
            raise AttributeError(name)
        return self[name]

    async def list_collection_names(self) -> list[str]:
        await self.client.server.enter(None)
        names: list[str] = self.client.server.engine[self.name].list_collection_names()
        return names

    async def create_collection(self, name: str) -> _Collection:
        await self.client.server.enter(None)
        self.client.server.engine[self.name].create_collection(name)
        return self[name]

    async def command(self, name: str, **_: Any) -> dict[str, Any]:
        await self.client.server.enter(None)
        if name == "ping":
            return {"ok": 1.0}
        if name == "hello":
            reply: dict[str, Any] = {"ok": 1.0, "isWritablePrimary": True}
            if not self.client.server.standalone:
                reply["setName"] = "rs-double"
            return reply
        raise NotImplementedError(f"double: command {name!r}")


def _method(name: str) -> Any:
    """An async ``name(*args, session=None, **kwargs)`` that runs mongomock's ``name``."""

    async def method(self: _Collection, *args: Any, session: Any = None, **kwargs: Any) -> Any:
        return await self._run(session, lambda: getattr(self._engine, name)(*args, **kwargs))

    method.__name__ = name
    return method


class _Collection:
    """The async collection methods nursery calls, run by mongomock under the double's rules."""

    def __init__(self, server: DoubleServer, engine: Any) -> None:
        self._server = server
        self._engine = engine

    async def _run(self, session: Any, call: Callable[[], Any]) -> Any:
        await self._server.enter(session)
        return call()

    insert_one = _method("insert_one")
    insert_many = _method("insert_many")
    update_one = _method("update_one")
    delete_one = _method("delete_one")
    delete_many = _method("delete_many")
    find_one = _method("find_one")
    find_one_and_update = _method("find_one_and_update")
    count_documents = _method("count_documents")
    create_indexes = _method("create_indexes")
    index_information = _method("index_information")

    def find(self, *args: Any, session: Any = None, **kwargs: Any) -> _Cursor:
        return _Cursor(self, session, lambda: self._engine.find(*args, **kwargs))

    async def aggregate(self, pipeline: list[Any], session: Any = None, **kwargs: Any) -> _Cursor:
        return _Cursor(self, session, lambda: self._engine.aggregate(pipeline, **kwargs))


class _Cursor:
    def __init__(self, collection: _Collection, session: Any, open_: Callable[[], Any]) -> None:
        self._collection = collection
        self._session = session
        self._open = open_
        self._sort: tuple[Any, ...] | None = None
        self._limit = 0

    def sort(self, key: Any, direction: Any = None) -> _Cursor:
        self._sort = (key,) if direction is None else (key, direction)
        return self

    def limit(self, limit: int) -> _Cursor:
        self._limit = limit
        return self

    async def to_list(self, length: int | None = None) -> list[Any]:
        def run() -> list[Any]:
            cursor = self._open()
            if self._sort is not None:
                cursor = cursor.sort(*self._sort)
            if self._limit:
                cursor = cursor.limit(self._limit)
            return list(itertools.islice(cursor, length))

        result: list[Any] = await self._collection._run(self._session, run)
        return result


class _Session:
    """A session whose transactions are emulated (see the module docstring)."""

    def __init__(self, server: DoubleServer) -> None:
        self._server = server
        self._state = "none"  # none | active | committed | aborted
        self._snapshot: dict[tuple[str, str], Any] = {}

    async def __aenter__(self) -> _Session:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.end_session()

    @property
    def in_transaction(self) -> bool:
        return self._state == "active"

    async def end_session(self) -> None:
        if self.in_transaction:
            await self.abort_transaction()

    async def start_transaction(self, **_: Any) -> None:
        if self.in_transaction:
            raise AssertionError("double: a transaction is already open on this session")
        await self._server.enter(None)
        self._server.owner, self._server.owner_task = self, asyncio.current_task()
        self._server.transactions += 1
        self._snapshot = self._server.snapshot()
        self._state = "active"

    def _release(self, state: str) -> None:
        self._state = state
        self._server.owner = self._server.owner_task = None
        self._snapshot = {}

    async def commit_transaction(self) -> None:
        if self._state == "committed":  # a retried commit of one that went through
            return
        if not self.in_transaction:
            raise AssertionError(f"double: commit in state {self._state}")
        fault = self._server.take_fault("commit")
        if fault is not None and fault.label == UNKNOWN_COMMIT:
            self._server.commits += 1
            self._release("committed")  # applied; only the answer was lost
            raise OperationFailure("commit answer lost (injected)", code=91,
                                   details={"errorLabels": [UNKNOWN_COMMIT]})
        if fault is not None:
            self._server.restore(self._snapshot)
            self._server.aborts += 1
            self._release("aborted")
            raise OperationFailure("commit failed (injected)", code=112,
                                   details={"errorLabels": [fault.label]})
        self._server.commits += 1
        self._release("committed")

    async def abort_transaction(self) -> None:
        if not self.in_transaction:
            return
        self._server.restore(self._snapshot)
        self._server.aborts += 1
        self._release("aborted")
