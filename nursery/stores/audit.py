"""The audit and analytics contract: what the service layer may ask of the audit log.

Two implementations, like the todo store: ``postgres.PostgresAuditStore`` (table ``audit_log``,
migration 0002) and ``mongo.MongoStore`` (collection ``audit``). Both keep the same values at
the same precision (instants in UTC, whole milliseconds: what MongoDB can hold), so the same
entries give the same answers on either, and the contract suite checks that they do.

Every method is one trio-callable operation and raises ``StoreUnavailable`` when the database
cannot be reached in time, never a driver's exception.

Retention: ``prune_audit`` deletes old entries one batch at a time, and one instance at a time
(a PostgreSQL advisory lock held by the batch's transaction; a lease document on MongoDB), so
instances that all prune on a schedule never delete the same rows at once nor pile up work.

Analytics, per UTC day, for one user (computed in the database: SQL ``GROUP BY`` on
PostgreSQL, an aggregation pipeline on MongoDB):

- ``created``: entries of kind ``todo.create`` that day.
- ``completed``: distinct todos that a write that day marked done: a ``todo.create`` or
  ``todo.update`` entry with ``done`` true. Ticking the same todo twice in a day counts once;
  ticked on two days, it counts on both.
- ``active_devices``: distinct sessions (devices) that day with any audited action (a login,
  logout, revocation or todo write; reads are not audited).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Protocol

from nursery.models import iso

log = logging.getLogger(__name__)

LOGIN = "login"
LOGOUT = "logout"
REVOKE = "revoke"
TODO_CREATE = "todo.create"
TODO_UPDATE = "todo.update"
TODO_DELETE = "todo.delete"
KINDS = (LOGIN, LOGOUT, REVOKE, TODO_CREATE, TODO_UPDATE, TODO_DELETE)


def to_millisecond(moment: datetime) -> datetime:
    """``moment`` in UTC, cut to whole milliseconds (MongoDB's precision)."""
    moment = moment.astimezone(UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """Who did what, when, from which device (session), on which instance.

    ``id`` makes a retried batch write idempotent; ``seq`` orders the entries one instance
    recorded within the same millisecond. ``done``: the value a todo write set for ``done``
    (``None`` when it did not set it).
    """

    id: str
    user_id: str
    kind: str
    at: datetime
    seq: int
    session_id: str | None
    device: str
    instance: str
    todo_id: str | None = None
    done: bool | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "at": iso(self.at),
            "session": self.session_id,
            "device": self.device,
            "instance": self.instance,
            "todo": self.todo_id,
            "done": self.done,
            "details": dict(self.details),
        }


@dataclass(frozen=True, slots=True)
class DayFigures:
    day: date
    created: int = 0
    completed: int = 0
    active_devices: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "date": self.day.isoformat(),
            "created": self.created,
            "completed": self.completed,
            "active_devices": self.active_devices,
        }


def is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
        return True
    except (ValueError, AttributeError, TypeError):
        return False


def storable(entries: list[AuditEntry]) -> list[AuditEntry]:
    """The entries whose ids are UUIDs: all of them unless a caller has a bug, and then those
    are logged and left out rather than failing the whole batch."""
    good = [
        e for e in entries
        if is_uuid(e.id) and is_uuid(e.user_id)
        and all(v is None or is_uuid(v) for v in (e.session_id, e.todo_id))
    ]
    if len(good) < len(entries):
        log.error("audit: %d entries with ids that are not UUIDs left out", len(entries) - len(good))
    return good


class AuditStore(Protocol):
    async def append_audit(self, entries: list[AuditEntry]) -> None:
        """Store ``entries``; an entry whose ``id`` is already stored is skipped (a retried
        batch writes nothing twice)."""

    async def recent_audit(self, user_id: str, limit: int) -> list[AuditEntry]:
        """The user's newest entries first: by ``at``, then ``seq``, then ``id``, descending."""

    async def daily_figures(self, user_id: str, start: datetime, end: datetime) -> list[DayFigures]:
        """Figures of each UTC day with entries in ``[start, end)``, oldest first; days without
        entries are left out."""

    async def prune_audit(self, before: datetime, limit: int) -> int | None:
        """Delete up to ``limit`` of the oldest entries older than ``before``, as the only
        pruner of the whole deployment for that batch: the number deleted, or ``None`` when
        another instance is pruning right now (then nothing is deleted)."""
