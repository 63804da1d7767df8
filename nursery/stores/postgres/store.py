"""``PostgresStore``: the store contract on PostgreSQL through asyncpg.

asyncpg is asyncio-only: every public method hands a whole operation, on one pooled
connection, to the asyncio thread (``stores.asyncio_thread``) once, never one query at a
time. The queries live in ``_accounts`` and ``_todos``; this module owns the pool and the
timeout; ``_errors`` maps the driver's errors (none escapes).

Cancellation: cancelling a caller cancels the asyncio task and the query server-side, and
returns once the connection is back in the pool.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, ClassVar, TypeVar

import asyncpg
import trio

from nursery.errors import StoreUnavailable
from nursery.models import (
    Credentials,
    Session,
    TodoDraft,
    User,
    WriteResult,
)
from nursery.stores.asyncio_thread import AsyncioThread
from nursery.stores.postgres import _accounts, _todos
from nursery.stores.postgres._errors import DRIVER_ERRORS, translate
from nursery.stores.postgres.migrate import apply_migrations
from nursery.stores.todo_methods import TodoMethods
from nursery.stores.todo_methods import fingerprint as _fingerprint
from nursery.stores.todo_methods import known_uuid as _known_id
from nursery.stores.todo_methods import parse_uuid as _uuid

log = logging.getLogger(__name__)
T = TypeVar("T")

Observe = Callable[[str, bool, float], None]  # (operation, succeeded, seconds)


class PostgresStore(TodoMethods):
    _queries: ClassVar[Any] = _todos  # the todo queries (``TodoMethods``)

    def __init__(
        self, pool: asyncpg.Pool, aio: AsyncioThread, timeout: float,
        observe: Observe | None = None,
    ) -> None:
        self._pool = pool
        self._aio = aio
        self._timeout = timeout
        self._observe = observe

    async def _run(self, op: Callable[..., Awaitable[T]], *args: Any, name: str = "") -> T:
        started = time.perf_counter()
        ok = False
        try:
            # A plain scope, not fail_after (a generator: measurably slower, on every operation).
            with trio.CancelScope(deadline=trio.current_time() + self._timeout) as timer:
                result: T = await self._aio.run(self._on_connection, op, *args)
            if timer.cancelled_caught:
                raise StoreUnavailable("the database did not answer in time")
            ok = True
            return result
        except DRIVER_ERRORS as exc:
            raise translate(exc) from exc
        finally:
            if self._observe is not None:
                self._observe(name or op.__name__, ok, time.perf_counter() - started)

    def pool_use(self) -> tuple[int, int]:
        """(connections open, connections in use)."""
        size = self._pool.get_size()
        return size, size - self._pool.get_idle_size()

    async def _on_connection(self, op: Callable[..., Awaitable[T]], *args: Any) -> T:
        # No asyncpg-level timeouts: the Trio deadline in ``_run`` bounds the whole operation
        # (and cancels the query server-side).
        async with self._pool.acquire() as conn:
            try:
                return await op(conn, *args)
            except asyncpg.exceptions.InternalClientError as exc:
                if not conn.is_closed() and not _ended_mid_operation(exc):
                    raise
                # The server ended the session mid-operation and asyncpg's protocol noticed
                # first (MagicStack/asyncpg#1069): the connection is stuck mid-state and
                # must not go back to the pool; to the caller it is a lost connection.
                conn.terminate()
                raise StoreUnavailable("the database connection was lost mid-operation") from exc

    # -- lifecycle ------------------------------------------------------------------------------

    async def ping(self) -> None:
        await self._run(_select_one)

    async def migrate(self) -> list[str]:
        return await self._run(apply_migrations)

    async def aclose(self) -> None:
        with trio.move_on_after(self._timeout) as scope:
            await self._aio.run(self._pool.close)
        if scope.cancelled_caught:
            self._pool.terminate()

    # -- accounts -------------------------------------------------------------------------------

    async def create_user(self, email: str, password_hash: str) -> User:
        return await self._run(_accounts.create_user, email, password_hash)

    async def credentials(self, email: str) -> Credentials | None:
        return await self._run(_accounts.credentials, email)

    async def get_user(self, user_id: str) -> User | None:
        uid = _uuid(user_id)
        return None if uid is None else await self._run(_accounts.get_user, uid)

    async def create_session(self, user_id: str, device: str) -> Session:
        return await self._run(_accounts.create_session, _known_id(user_id, "user"), device)

    async def live_session(self, session_id: str) -> Session | None:
        sid = _uuid(session_id)
        return None if sid is None else await self._run(_accounts.live_session, sid)

    async def list_sessions(self, user_id: str) -> list[Session]:
        return await self._run(_accounts.list_sessions, _known_id(user_id, "user"))

    async def revoke_sessions(
        self, user_id: str, *, only: str | None = None, keep: str | None = None
    ) -> list[Session]:
        only_id = _known_id(only, "session") if only is not None else None
        return await self._run(
            _accounts.revoke_sessions, _known_id(user_id, "user"), only_id, _uuid(keep)
        )

    # -- todos ----------------------------------------------------------------------------------

    async def create_todo(
        self, user_id: str, draft: TodoDraft, *, idempotency_key: str | None = None
    ) -> WriteResult:
        uid = _known_id(user_id, "user")
        if idempotency_key is None:
            return await self._run(_todos.create_in_one_statement, uid, draft, name="create_todo")
        apply = _todos.insert_todo(uid, draft)
        return await self._run(
            _todos.write, uid, apply, idempotency_key,
            _fingerprint("create", dataclasses.asdict(draft)), name="create_todo",
        )


def _ended_mid_operation(exc: asyncpg.exceptions.InternalClientError) -> bool:
    return "another operation" in str(exc)  # "cannot switch to state N; another operation ..."


async def _select_one(conn: asyncpg.Connection) -> None:
    await conn.fetchval("SELECT 1")


async def _keep_connection_as_is(conn: asyncpg.Connection) -> None:
    """The pool's reset on release. asyncpg's default sends a reset query (``RESET ALL``,
    ``UNLISTEN *``, ...) on every release: a second round trip per operation. We keep no
    session state (no SET, LISTEN, cursors or session-level advisory locks), and asyncpg
    still rolls back a transaction left open, so there is nothing to reset."""


@asynccontextmanager
async def open_postgres_store(
    url: str,
    aio: AsyncioThread,
    *,
    pool_size: int = 10,
    timeout: float = 5.0,
    observe: Observe | None = None,
) -> AsyncIterator[PostgresStore]:
    """Connect, apply migrations, yield the store; close the pool on exit.

    Raises ``StoreUnavailable`` when the database cannot be reached within ``timeout``.
    """
    try:
        with trio.fail_after(timeout):
            pool = await aio.run(
                asyncpg.create_pool,
                url,
                min_size=1,
                max_size=pool_size,
                reset=_keep_connection_as_is,
                # No idle-close timer, which asyncpg re-arms on every release: the pool never
                # exceeds pool_size anyway.
                max_inactive_connection_lifetime=0,
            )
    except trio.TooSlowError as exc:
        raise StoreUnavailable(f"PostgreSQL did not answer within {timeout} s") from exc
    except DRIVER_ERRORS as exc:
        raise StoreUnavailable(f"cannot connect to PostgreSQL: {exc}") from exc
    store = PostgresStore(pool, aio, timeout, observe)
    try:
        applied = await store.migrate()
        if applied:
            log.info("applied migrations %s", ", ".join(applied))
        yield store
    finally:
        with trio.CancelScope(shield=True):
            await store.aclose()
