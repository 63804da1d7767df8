"""The audit log and its analytics on MongoDB. Asyncio side.

The analytics pipeline is the twin of ``postgres._audit.DAILY_FIGURES`` (see
``nursery.stores.audit`` for what the figures mean); a change to one is a change to both,
and the contract suite holds them to the same hand-computed answers.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.errors import BulkWriteError, DuplicateKeyError

from nursery.stores.audit import TODO_CREATE, TODO_UPDATE, AuditEntry, DayFigures
from nursery.stores.mongo._todos import utc

DUPLICATE_KEY = 11000
PRUNE_LEASE = "audit-prune"  # the ``leases`` document the pruner holds for one batch
# Longer than a batch can take (the store's timeout): a pruner that died holding the lease
# keeps the others out this long at most.
PRUNE_LEASE_SECONDS = 60.0


def _doc(entry: AuditEntry) -> dict[str, Any]:
    return {
        "_id": entry.id,
        "user": entry.user_id,
        "kind": entry.kind,
        "at": entry.at,
        "seq": entry.seq,
        "session": entry.session_id,
        "device": entry.device,
        "instance": entry.instance,
        "todo": entry.todo_id,
        "done": entry.done,
        "details": dict(entry.details),
    }


def _entry(doc: Mapping[str, Any]) -> AuditEntry:
    at = utc(doc["at"])
    assert at is not None
    return AuditEntry(
        id=doc["_id"],
        user_id=doc["user"],
        kind=doc["kind"],
        at=at,
        seq=doc["seq"],
        session_id=doc["session"],
        device=doc["device"],
        instance=doc["instance"],
        todo_id=doc["todo"],
        done=doc["done"],
        details=doc["details"],
    )


async def append(db: Any, entries: list[AuditEntry]) -> None:
    """One unordered bulk insert; entries already stored (a retried batch) are skipped."""
    try:
        await db.audit.insert_many([_doc(e) for e in entries], ordered=False)
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if exc.details.get("writeConcernErrors") or any(
            e.get("code") != DUPLICATE_KEY for e in errors
        ):
            raise


async def recent(db: Any, user_id: str, limit: int) -> list[AuditEntry]:
    found = db.audit.find({"user": user_id})
    order = [("at", DESCENDING), ("seq", DESCENDING), ("_id", DESCENDING)]
    return [_entry(d) for d in await found.sort(order).limit(limit).to_list()]


def _count_distinct(array: str) -> dict[str, Any]:
    """The size of a set without its null (like SQL's count(DISTINCT x), which skips NULL)."""
    return {"$size": {"$filter": {"input": array, "as": "x", "cond": {"$ne": ["$$x", None]}}}}


def daily_figures_pipeline(user_id: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
    completes = {"$and": [{"$eq": ["$done", True]}, {"$in": ["$kind", [TODO_CREATE, TODO_UPDATE]]}]}
    return [
        {"$match": {"user": user_id, "at": {"$gte": start, "$lt": end}}},
        {"$group": {
            # BSON dates are UTC: the day is the date part of the instant in UTC.
            "_id": {"$dateToString": {"format": "%Y-%m-%d", "date": "$at"}},
            "created": {"$sum": {"$cond": [{"$eq": ["$kind", TODO_CREATE]}, 1, 0]}},
            "completed": {"$addToSet": {"$cond": [completes, "$todo", None]}},
            "sessions": {"$addToSet": "$session"},
        }},
        {"$project": {
            "created": 1,
            "completed": _count_distinct("$completed"),
            "active_devices": _count_distinct("$sessions"),
        }},
        {"$sort": {"_id": 1}},
    ]


async def daily_figures(db: Any, user_id: str, start: datetime, end: datetime) -> list[DayFigures]:
    cursor = await db.audit.aggregate(daily_figures_pipeline(user_id, start, end))
    return [
        DayFigures(
            day=date.fromisoformat(row["_id"]),
            created=row["created"],
            completed=row["completed"],
            active_devices=row["active_devices"],
        )
        for row in await cursor.to_list()
    ]


async def prune(db: Any, owner: str, before: datetime, limit: int) -> int | None:
    """One batch of the oldest entries older than ``before``, holding the prune lease (taken
    when free, expired or already ours); ``None`` (nothing deleted) when another holds it."""
    now = datetime.now(UTC)
    try:
        # An upsert whose filter does not match a lease held by someone else tries to insert
        # a second document with the same _id: the duplicate key error is the refusal.
        await db.leases.find_one_and_update(
            {"_id": PRUNE_LEASE, "$or": [{"until": {"$lt": now}}, {"owner": owner}]},
            {"$set": {"owner": owner, "until": now + timedelta(seconds=PRUNE_LEASE_SECONDS)}},
            upsert=True,
        )
    except DuplicateKeyError:
        return None
    try:
        old = db.audit.find({"at": {"$lt": before}}, {"_id": 1}).sort("at", ASCENDING).limit(limit)
        ids = [doc["_id"] for doc in await old.to_list()]
        if not ids:
            return 0
        result = await db.audit.delete_many({"_id": {"$in": ids}})
        return int(result.deleted_count)
    finally:
        await db.leases.delete_one({"_id": PRUNE_LEASE, "owner": owner})
