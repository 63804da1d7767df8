"""``SplitStore``: accounts in one store, todos in another, behind the one ``Store`` interface.

With MongoDB configured, users and sessions stay in PostgreSQL and todos (with their revision
counter) live in MongoDB. Everything that holds "the store" (services, readiness, the
tombstone purge, metrics) keeps working unchanged: each call goes to the store that owns it.

Resource handling: it closes nothing; whoever opened the two stores closes them.
"""

from __future__ import annotations

from typing import Protocol

from nursery.models import (
    ChangeBatch,
    Credentials,
    Session,
    Todo,
    TodoDraft,
    TodoPage,
    TodoPatch,
    User,
    WriteResult,
)
from nursery.stores.base import Store, TodoStore


class PingableTodoStore(TodoStore, Protocol):
    async def ping(self) -> None: ...


class SplitStore:
    def __init__(self, accounts: Store, todos: PingableTodoStore) -> None:
        self._accounts = accounts
        self._todos = todos

    # -- both -----------------------------------------------------------------------------------

    async def ping(self) -> None:
        """Ready only when both answer."""
        await self._accounts.ping()
        await self._todos.ping()

    async def aclose(self) -> None:
        """Nothing: the owners of the two stores close them."""

    def pool_use(self) -> tuple[int, int]:
        return self._accounts.pool_use()

    # -- accounts -------------------------------------------------------------------------------

    async def create_user(self, email: str, password_hash: str) -> User:
        return await self._accounts.create_user(email, password_hash)

    async def credentials(self, email: str) -> Credentials | None:
        return await self._accounts.credentials(email)

    async def get_user(self, user_id: str) -> User | None:
        return await self._accounts.get_user(user_id)

    async def create_session(self, user_id: str, device: str) -> Session:
        return await self._accounts.create_session(user_id, device)

    async def live_session(self, session_id: str) -> Session | None:
        return await self._accounts.live_session(session_id)

    async def list_sessions(self, user_id: str) -> list[Session]:
        return await self._accounts.list_sessions(user_id)

    async def revoke_sessions(
        self, user_id: str, *, only: str | None = None, keep: str | None = None
    ) -> list[Session]:
        return await self._accounts.revoke_sessions(user_id, only=only, keep=keep)

    # -- todos ----------------------------------------------------------------------------------

    async def create_todo(
        self, user_id: str, draft: TodoDraft, *, idempotency_key: str | None = None
    ) -> WriteResult:
        return await self._todos.create_todo(user_id, draft, idempotency_key=idempotency_key)

    async def get_todo(self, user_id: str, todo_id: str) -> Todo | None:
        return await self._todos.get_todo(user_id, todo_id)

    async def list_todos(
        self,
        user_id: str,
        *,
        done: bool | None = None,
        query: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> TodoPage:
        return await self._todos.list_todos(
            user_id, done=done, query=query, limit=limit, cursor=cursor
        )

    async def update_todo(
        self, user_id: str, todo_id: str, patch: TodoPatch, *, idempotency_key: str | None = None
    ) -> WriteResult:
        return await self._todos.update_todo(
            user_id, todo_id, patch, idempotency_key=idempotency_key
        )

    async def delete_todo(
        self,
        user_id: str,
        todo_id: str,
        *,
        if_rev: int | None = None,
        idempotency_key: str | None = None,
    ) -> WriteResult:
        return await self._todos.delete_todo(
            user_id, todo_id, if_rev=if_rev, idempotency_key=idempotency_key
        )

    async def changes_since(self, user_id: str, since: int, *, limit: int = 500) -> ChangeBatch:
        return await self._todos.changes_since(user_id, since, limit=limit)

    async def purge_tombstones(self, older_than_seconds: float) -> int:
        return await self._todos.purge_tombstones(older_than_seconds)
