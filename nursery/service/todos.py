"""Todos and the change feed. Every committed write is announced on the broker."""

from __future__ import annotations

from nursery.errors import NotFound
from nursery.models import ChangeBatch, Todo, TodoPage, WriteResult
from nursery.pubsub.events import TodoChanged
from nursery.service import inputs
from nursery.service.accounts import Principal
from nursery.service.audit import Audit
from nursery.service.limits import Limits
from nursery.service.notify import Notifier
from nursery.stores.audit import TODO_CREATE, TODO_DELETE, TODO_UPDATE
from nursery.stores.base import TodoStore

MAX_PAGE = 200
MAX_CHANGES = 1000


class Todos:
    def __init__(
        self, store: TodoStore, notifier: Notifier, limits: Limits, *, audit: Audit | None = None
    ) -> None:
        self._store = store
        self._notifier = notifier
        self._limits = limits
        self._audit = audit

    async def _announce(
        self,
        who: Principal,
        result: WriteResult,
        kind: str,
        fields: dict[str, object] | None = None,
    ) -> WriteResult:
        """Publish a committed write and put it on the audit trail (a replay is neither)."""
        if not result.replayed:
            if self._audit is not None:
                fields = fields or {}
                done = fields.get("done")
                details: dict[str, object] = {"rev": result.change.rev}
                if kind == TODO_UPDATE:
                    details["fields"] = sorted(fields)
                self._audit.record(
                    kind, who.user_id, who.session_id, who.device, todo_id=result.change.id,
                    done=done if isinstance(done, bool) else None, details=details,
                )
            await self._notifier.publish(TodoChanged.of(who.user_id, result.change))
        return result

    async def create(
        self, who: Principal, form: inputs.NewTodo, idempotency_key: str | None = None
    ) -> WriteResult:
        await self._limits.write(who.user_id)
        draft = form.draft()
        result = await self._store.create_todo(who.user_id, draft, idempotency_key=idempotency_key)
        return await self._announce(who, result, TODO_CREATE, {"done": draft.done})

    async def get(self, who: Principal, todo_id: str) -> Todo:
        todo = await self._store.get_todo(who.user_id, todo_id)
        if todo is None:
            raise NotFound("todo not found")
        return todo

    async def list(
        self,
        who: Principal,
        *,
        done: bool | None = None,
        query: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> TodoPage:
        return await self._store.list_todos(
            who.user_id, done=done, query=query, limit=limit, cursor=cursor
        )

    async def update(
        self,
        who: Principal,
        todo_id: str,
        form: inputs.TodoChanges,
        idempotency_key: str | None = None,
    ) -> WriteResult:
        await self._limits.write(who.user_id)
        patch = form.patch()
        result = await self._store.update_todo(
            who.user_id, todo_id, patch, idempotency_key=idempotency_key
        )
        return await self._announce(who, result, TODO_UPDATE, patch.fields)

    async def delete(
        self,
        who: Principal,
        todo_id: str,
        *,
        if_rev: int | None = None,
        idempotency_key: str | None = None,
    ) -> WriteResult:
        await self._limits.write(who.user_id)
        result = await self._store.delete_todo(
            who.user_id, todo_id, if_rev=if_rev, idempotency_key=idempotency_key
        )
        return await self._announce(who, result, TODO_DELETE)

    async def changes(self, who: Principal, since: int, limit: int = 500) -> ChangeBatch:
        return await self._store.changes_since(who.user_id, since, limit=limit)
