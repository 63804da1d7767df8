"""The store contract: what the service layer may ask of a database.

Every method is one trio-callable operation (implementations cross into asyncio once per call).
Every method raises ``StoreUnavailable`` when the database cannot be reached in time, and
never a driver's exception. Ids of other users' rows behave as if they did not exist.
"""

from __future__ import annotations

from typing import Protocol

from nursery.errors import Conflict
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


def stale_revision(if_rev: int, current: int) -> Conflict:
    """The 409 of a write whose ``if_rev`` is not the todo's revision, as every store says it."""
    return Conflict(f"the todo changed since revision {if_rev}: it is at revision {current} now",
                    details={"rev": current})


class AccountStore(Protocol):
    async def create_user(self, email: str, password_hash: str) -> User:
        """Raises ``Conflict`` when the email is taken."""

    async def credentials(self, email: str) -> Credentials | None: ...

    async def get_user(self, user_id: str) -> User | None: ...

    async def create_session(self, user_id: str, device: str) -> Session: ...

    async def live_session(self, session_id: str) -> Session | None:
        """The session if it exists and is not revoked; refreshes its last-seen time."""

    async def list_sessions(self, user_id: str) -> list[Session]:
        """Live (not revoked) sessions, oldest first."""

    async def revoke_sessions(
        self, user_id: str, *, only: str | None = None, keep: str | None = None
    ) -> list[Session]:
        """Revoke session ``only``, or every live session but ``keep``; returns those revoked."""


class TodoStore(Protocol):
    async def create_todo(
        self, user_id: str, draft: TodoDraft, *, idempotency_key: str | None = None
    ) -> WriteResult: ...

    async def get_todo(self, user_id: str, todo_id: str) -> Todo | None: ...

    async def list_todos(
        self,
        user_id: str,
        *,
        done: bool | None = None,
        query: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> TodoPage:
        """Oldest first, keyset-paginated: a page boundary never skips nor repeats a todo
        however many writes happen between pages. Raises ``InvalidInput`` on a bad cursor."""

    async def update_todo(
        self, user_id: str, todo_id: str, patch: TodoPatch, *, idempotency_key: str | None = None
    ) -> WriteResult:
        """Raises ``NotFound``, or ``Conflict`` when ``patch.if_rev`` is not the todo's rev."""

    async def delete_todo(
        self,
        user_id: str,
        todo_id: str,
        *,
        if_rev: int | None = None,
        idempotency_key: str | None = None,
    ) -> WriteResult:
        """Leaves a tombstone carrying the next revision."""

    async def changes_since(self, user_id: str, since: int, *, limit: int = 500) -> ChangeBatch:
        """The latest state of every todo changed after ``since``, in revision order."""

    async def purge_tombstones(self, older_than_seconds: float) -> int:
        """Forget deletes older than the retention period; returns how many."""


class Store(AccountStore, TodoStore, Protocol):
    async def ping(self) -> None:
        """Raises ``StoreUnavailable`` unless the database answers."""

    async def aclose(self) -> None: ...

    def pool_use(self) -> tuple[int, int]:
        """(connections open, connections in use), for metrics."""
