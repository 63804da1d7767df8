"""Todos and the change feed on MongoDB. Asyncio side, one function per store operation.

The revision rule (docs/protocol.md), as on PostgreSQL: a write increments the user's counter in
``revisions`` and writes the todo with that revision in ONE transaction. Two transactions of
the same user both write that counter document, so MongoDB lets only one of them commit: the
other fails with a write conflict before it can commit and is run again (``_transactions``),
by then seeing the new counter. A user's writes therefore commit one at a time, in revision
order, and a snapshot read never sees revision N+1 without N.

Instants are kept in whole milliseconds (BSON dates): they are cut before they are written,
so what a write returns is exactly what a later read returns.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING, ReturnDocument

from nursery.errors import InvalidInput, NotFound
from nursery.models import (
    Change,
    ChangeBatch,
    Todo,
    TodoDraft,
    TodoPage,
    TodoPatch,
    WriteResult,
    change_from_json,
)
from nursery.stores.audit import to_millisecond
from nursery.stores.base import stale_revision
from nursery.stores.cursors import decode_cursor, encode_cursor
from nursery.stores.mongo._transactions import run_transaction

PATCHABLE = frozenset({"title", "notes", "done", "due", "tags"})
IDEMPOTENCY_RETENTION = timedelta(hours=24)
_LIVE: dict[str, Any] = {"deleted_at": None}


def utc(moment: datetime | None) -> datetime | None:
    """A BSON date as read back (tz-aware, the driver's UTC object) as ``datetime.UTC``."""
    return None if moment is None else moment.astimezone(UTC)


def now() -> datetime:
    return to_millisecond(datetime.now(UTC))


def todo_from_doc(doc: Mapping[str, Any]) -> Todo:
    created, updated = utc(doc["created_at"]), utc(doc["updated_at"])
    assert created is not None and updated is not None
    return Todo(
        id=doc["_id"],
        title=doc["title"],
        notes=doc["notes"],
        done=doc["done"],
        due=utc(doc["due"]),
        tags=tuple(doc["tags"]),
        rev=doc["rev"],
        created_at=created,
        updated_at=updated,
    )


def change_from_doc(doc: Mapping[str, Any]) -> Change:
    if doc.get("deleted_at") is not None:
        return Change(rev=doc["rev"], op="delete", id=doc["_id"])
    todo = todo_from_doc(doc)
    return Change(rev=todo.rev, op="upsert", id=todo.id, todo=todo)


def _stored(name: str, value: Any) -> Any:
    if name == "tags":
        return list(value)
    if name == "due" and value is not None:
        return to_millisecond(value)
    return value


# -- writes ------------------------------------------------------------------------------------

Apply = Callable[[Any, Any, int], Awaitable[Change]]  # (db, session, rev) -> the change


class _Replay(Exception):
    """Unwinds the transaction of a write whose idempotency key was used before."""

    def __init__(self, fingerprint: str, result: dict[str, Any]) -> None:
        self.fingerprint = fingerprint
        self.result = result


async def write(
    db: Any, user_id: str, apply: Apply, idempotency_key: str | None, fingerprint: str
) -> WriteResult:
    """Take the user's next revision, apply one change with it, remember the idempotency key.

    A key seen before returns the first result and aborts the transaction: the revision is
    not consumed, nothing changes. Keys are read after the counter is written, so of two
    concurrent retries one conflicts, runs again, and finds the other's key.
    """

    async def body(session: Any) -> Change:
        counter = await db.revisions.find_one_and_update(
            {"_id": user_id},
            {"$inc": {"rev": 1}, "$setOnInsert": {"horizon": 0}},
            upsert=True,
            return_document=ReturnDocument.AFTER,
            session=session,
        )
        key_id = f"{user_id}/{idempotency_key}"
        if idempotency_key is not None:
            earlier = await db.idempotency.find_one({"_id": key_id}, session=session)
            if earlier is not None:
                raise _Replay(earlier["fingerprint"], earlier["result"])
        change = await apply(db, session, counter["rev"])
        if idempotency_key is not None:
            await db.idempotency.insert_one(
                {
                    "_id": key_id,
                    "user": user_id,
                    "key": idempotency_key,
                    "fingerprint": fingerprint,
                    "result": change.to_json(),
                    "created_at": now(),
                },
                session=session,
            )
        return change

    try:
        return WriteResult(await run_transaction(db.client, body))
    except _Replay as replay:
        if replay.fingerprint != fingerprint:
            raise InvalidInput(
                "this Idempotency-Key was used for a different request",
                details={"header": "Idempotency-Key"},
            ) from None
        return WriteResult(change_from_json(replay.result), replayed=True)


def insert_todo(user_id: str, todo_id: str, draft: TodoDraft) -> Apply:
    async def apply(db: Any, session: Any, rev: int) -> Change:
        moment = now()
        doc = {
            "_id": todo_id,
            "user": user_id,
            "title": draft.title,
            "notes": draft.notes,
            "done": draft.done,
            "due": _stored("due", draft.due),
            "tags": list(draft.tags),
            "rev": rev,
            "created_at": moment,
            "updated_at": moment,
            "deleted_at": None,
        }
        await db.todos.insert_one(doc, session=session)
        return change_from_doc(doc)

    return apply


async def _check_live_todo(
    db: Any, session: Any, user_id: str, todo_id: str, if_rev: int | None
) -> None:
    current = await db.todos.find_one(
        {"_id": todo_id, "user": user_id, **_LIVE}, {"rev": 1}, session=session
    )
    if current is None:
        raise NotFound("todo not found")
    if if_rev is not None and if_rev != current["rev"]:
        raise stale_revision(if_rev, current["rev"])


async def _set(db: Any, session: Any, todo_id: str, changes: dict[str, Any]) -> Change:
    doc = await db.todos.find_one_and_update(
        {"_id": todo_id},
        {"$set": changes},
        return_document=ReturnDocument.AFTER,
        session=session,
    )
    return change_from_doc(doc)


def update_todo(user_id: str, todo_id: str, patch: TodoPatch) -> Apply:
    async def apply(db: Any, session: Any, rev: int) -> Change:
        await _check_live_todo(db, session, user_id, todo_id, patch.if_rev)
        fields = {n: _stored(n, v) for n, v in patch.fields.items() if n in PATCHABLE}
        return await _set(db, session, todo_id, {**fields, "rev": rev, "updated_at": now()})

    return apply


def delete_todo(user_id: str, todo_id: str, if_rev: int | None) -> Apply:
    async def apply(db: Any, session: Any, rev: int) -> Change:
        await _check_live_todo(db, session, user_id, todo_id, if_rev)
        moment = now()
        return await _set(db, session, todo_id, {"rev": rev, "updated_at": moment, "deleted_at": moment})

    return apply


# -- reads -------------------------------------------------------------------------------------


async def get_todo(db: Any, user_id: str, todo_id: str) -> Todo | None:
    doc = await db.todos.find_one({"_id": todo_id, "user": user_id, **_LIVE})
    return None if doc is None else todo_from_doc(doc)


def _contains(query: str) -> dict[str, Any]:
    """Case-insensitive substring, every character literal (as ILIKE with escapes)."""
    return {"$regex": re.escape(query), "$options": "i"}


async def list_todos(
    db: Any,
    user_id: str,
    done: bool | None,
    query: str | None,
    limit: int,
    cursor: str | None,
) -> TodoPage:
    conditions: list[dict[str, Any]] = [{"user": user_id, **_LIVE}]
    if done is not None:
        conditions.append({"done": done})
    if query is not None:
        conditions.append({"$or": [{"title": _contains(query)}, {"notes": _contains(query)}]})
    if cursor:
        created, last_id = decode_cursor(cursor)
        conditions.append({"$or": [
            {"created_at": {"$gt": created}},
            {"created_at": created, "_id": {"$gt": last_id}},
        ]})

    # One snapshot for the page and its rev: hello(since=rev) then misses nothing.
    async def read(session: Any) -> tuple[int, list[dict[str, Any]]]:
        counter = await db.revisions.find_one({"_id": user_id}, session=session)
        found = db.todos.find({"$and": conditions}, session=session)
        docs = await found.sort([("created_at", ASCENDING), ("_id", ASCENDING)]).limit(limit + 1).to_list()
        return (counter or {}).get("rev", 0), docs

    rev, docs = await run_transaction(db.client, read)
    items = [todo_from_doc(d) for d in docs[:limit]]
    next_cursor = encode_cursor(items[-1]) if len(docs) > limit else None
    return TodoPage(items=items, next_cursor=next_cursor, rev=rev)


async def changes_since(db: Any, user_id: str, since: int, limit: int) -> ChangeBatch:
    async def read(session: Any) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        counter = await db.revisions.find_one({"_id": user_id}, session=session)
        found = db.todos.find({"user": user_id, "rev": {"$gt": since}}, session=session)
        return counter, await found.sort("rev", ASCENDING).limit(limit + 1).to_list()

    counter, docs = await run_transaction(db.client, read)
    rev, horizon = (counter["rev"], counter["horizon"]) if counter else (0, 0)
    changes = [change_from_doc(d) for d in docs[:limit]]
    more = len(docs) > limit
    # ``rev``: what this batch brings the reader up to, so ``since=rev`` continues.
    return ChangeBatch(changes, rev=changes[-1].rev if more else rev, more=more, horizon=horizon)


async def purge_tombstones(db: Any, older_than_seconds: float) -> int:
    """Forget old deletes, raising each user's horizon past them; forget old idempotency keys.

    Per user, the horizon is raised BEFORE the tombstones go: a crash in between leaves
    tombstones a reader no longer needs (harmless), never a reader that misses a delete.
    Neither step needs a transaction: ``$max`` on one document is atomic.
    """
    cutoff = now() - timedelta(seconds=older_than_seconds)
    old = {"deleted_at": {"$type": "date", "$lt": cutoff}}
    groups = await (await db.todos.aggregate([
        {"$match": old},
        {"$group": {"_id": "$user", "rev": {"$max": "$rev"}}},
    ])).to_list()
    purged = 0
    for group in groups:
        await db.revisions.update_one({"_id": group["_id"]}, {"$max": {"horizon": group["rev"]}})
        gone = await db.todos.delete_many(
            {"user": group["_id"], "rev": {"$lte": group["rev"]}, **old}
        )
        purged += gone.deleted_count
    await db.idempotency.delete_many({"created_at": {"$lt": now() - IDEMPOTENCY_RETENTION}})
    return purged
