"""What the database stores share of the todo contract (``base.TodoStore``), written once.

Ids: a row's id is a UUID; any other string names nothing, so the store answers as for an
unknown id (404, or nothing) rather than a database error (``parse_uuid``, ``known_uuid``).
Keyed writes: a retry with the same ``Idempotency-Key`` must ask for the same write, which
the store checks against ``fingerprint``.

``TodoMethods`` reads, updates, deletes and syncs through the backend's own queries module
(``_todos``: the same functions in ``postgres/_todos.py`` and ``mongo/_todos.py``), each run
by the store's ``_run`` (its deadline, its driver's errors translated, its metrics). A backend
gives ``_queries`` (that module), ``_run`` and, when its driver wants ids in another form, ``_as_id``.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, TypeVar

from nursery.errors import NotFound
from nursery.models import ChangeBatch, Todo, TodoPage, TodoPatch, WriteResult

T = TypeVar("T")


def parse_uuid(value: str | None) -> uuid.UUID | None:
    """``value`` as a UUID; None if it is not one (it names nothing)."""
    if value is None:
        return None
    try:
        return uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        return None


def known_uuid(value: str, what: str) -> uuid.UUID:
    """``value`` as a UUID, or ``NotFound("<what> not found")``."""
    parsed = parse_uuid(value)
    if parsed is None:
        raise NotFound(f"{what} not found")
    return parsed


def fingerprint(operation: str, request: Any) -> str:
    """What a keyed write asked for: a retry must ask the same, or it is a different request."""
    body = json.dumps(request, sort_keys=True, default=str, separators=(",", ":"))
    return f"{operation} {hashlib.sha256(body.encode()).hexdigest()[:32]}"


class TodoMethods:
    """The todo operations every database store answers the same way (creating one differs:
    each backend makes its row and its id its own way)."""

    _queries: ClassVar[Any]  # the backend's todo queries module (``_todos``)

    async def _run(self, op: Callable[..., Awaitable[T]], *args: Any, name: str = "") -> T:
        raise NotImplementedError  # the store's own: deadline, errors, metrics

    def _as_id(self, value: uuid.UUID) -> Any:
        """A UUID in the form the driver stores (asyncpg: as is)."""
        return value

    def _id(self, value: str | None) -> Any:
        parsed = parse_uuid(value)
        return None if parsed is None else self._as_id(parsed)

    def _known(self, value: str, what: str) -> Any:
        return self._as_id(known_uuid(value, what))

    async def get_todo(self, user_id: str, todo_id: str) -> Todo | None:
        uid, tid = self._id(user_id), self._id(todo_id)
        if uid is None or tid is None:
            return None
        result: Todo | None = await self._run(self._queries.get_todo, uid, tid, name="get_todo")
        return result

    async def list_todos(
        self,
        user_id: str,
        *,
        done: bool | None = None,
        query: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> TodoPage:
        uid = self._known(user_id, "user")
        page: TodoPage = await self._run(
            self._queries.list_todos, uid, done, query, limit, cursor, name="list_todos")
        return page

    async def update_todo(
        self, user_id: str, todo_id: str, patch: TodoPatch, *, idempotency_key: str | None = None
    ) -> WriteResult:
        uid, tid = self._known(user_id, "user"), self._known(todo_id, "todo")
        apply = self._queries.update_todo(uid, tid, patch)
        result: WriteResult = await self._run(
            self._queries.write, uid, apply, idempotency_key,
            fingerprint(f"update {tid}", [patch.fields, patch.if_rev]), name="update_todo",
        )
        return result

    async def delete_todo(
        self,
        user_id: str,
        todo_id: str,
        *,
        if_rev: int | None = None,
        idempotency_key: str | None = None,
    ) -> WriteResult:
        uid, tid = self._known(user_id, "user"), self._known(todo_id, "todo")
        apply = self._queries.delete_todo(uid, tid, if_rev)
        result: WriteResult = await self._run(
            self._queries.write, uid, apply, idempotency_key,
            fingerprint(f"delete {tid}", if_rev), name="delete_todo",
        )
        return result

    async def changes_since(self, user_id: str, since: int, *, limit: int = 500) -> ChangeBatch:
        batch: ChangeBatch = await self._run(
            self._queries.changes_since, self._known(user_id, "user"), since, limit,
            name="changes_since")
        return batch

    async def purge_tombstones(self, older_than_seconds: float) -> int:
        purged: int = await self._run(
            self._queries.purge_tombstones, older_than_seconds, name="purge_tombstones")
        return purged
