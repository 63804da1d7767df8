"""The collections, their indexes, and the deployment check. Asyncio side, run at startup.

Collections (ids are the canonical UUID strings PostgreSQL's users and sessions have):

- ``revisions``: ``{_id: user id, rev, horizon}``, the user's revision counter. It lives here,
  not in PostgreSQL's ``users`` row, because the revision must be taken in the same
  transaction as the todo write, and no transaction spans two databases.
- ``todos``: ``{_id: todo id, user, title, notes, done, due, tags, rev, created_at,
  updated_at, deleted_at}``; ``deleted_at`` set: a tombstone.
- ``idempotency``: ``{_id: "<user id>/<key>", user, key, fingerprint, result, created_at}``.
- ``audit``: ``{_id: entry id, user, kind, at, seq, session, device, instance, todo, done,
  details}``.
- ``leases``: ``{_id: what, owner, until}``, e.g. the audit pruner's (one instance at a time).

Every collection is created at startup, before any transaction runs: creating one inside a
transaction has restrictions (read concern, sharding) best not met at all. That and
``create_indexes`` are idempotent (an index that exists with the same keys and options is left
alone), so every instance runs them at startup, concurrently if it likes.
"""

from __future__ import annotations

from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.errors import CollectionInvalid, OperationFailure

from nursery.errors import StoreUnavailable

COLLECTIONS = ("revisions", "todos", "idempotency", "audit", "leases")
NAMESPACE_EXISTS = 48

INDEXES: dict[str, list[IndexModel]] = {
    "todos": [
        # The change feed reads by (user, rev); revisions are unique per user.
        IndexModel([("user", ASCENDING), ("rev", ASCENDING)], name="user_rev", unique=True),
        # Listing pages by (created_at, _id) over live todos (deleted_at: null).
        IndexModel(
            [("user", ASCENDING), ("deleted_at", ASCENDING), ("created_at", ASCENDING),
             ("_id", ASCENDING)],
            name="user_live_created",
        ),
        IndexModel(
            [("deleted_at", ASCENDING)],
            name="tombstones",
            partialFilterExpression={"deleted_at": {"$type": "date"}},
        ),
    ],
    "idempotency": [IndexModel([("created_at", ASCENDING)], name="created")],
    "audit": [
        # /api/activity (newest first) and the analytics' range scan per user.
        IndexModel(
            [("user", ASCENDING), ("at", DESCENDING), ("seq", DESCENDING), ("_id", DESCENDING)],
            name="user_at",
        ),
        # Retention: the pruner deletes the oldest entries first.
        IndexModel([("at", ASCENDING)], name="at"),
    ],
}


async def check_deployment(db: Any) -> None:
    """Refuse a standalone server: transactions (the revision guarantee) need a replica set
    or a sharded cluster."""
    hello = await db.client.admin.command("hello")
    if not hello.get("setName") and hello.get("msg") != "isdbgrid":
        raise StoreUnavailable(
            "MongoDB is a standalone server: nursery needs a replica set for transactions"
            " (a single node is enough: mongod --replSet rs0, then rs.initiate())"
        )


async def create_collections(db: Any) -> None:
    existing = set(await db.list_collection_names())
    for name in COLLECTIONS:
        if name in existing:
            continue
        try:
            await db.create_collection(name)
        except CollectionInvalid:
            pass  # another instance was quicker
        except OperationFailure as exc:
            if exc.code != NAMESPACE_EXISTS:
                raise


async def create_indexes(db: Any) -> None:
    for collection, indexes in INDEXES.items():
        await db[collection].create_indexes(indexes)
