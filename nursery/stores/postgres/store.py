"""``PostgresStore``: the store contract on PostgreSQL through asyncpg.

asyncpg is asyncio-only: every public method hands a whole operation, on one pooled
connection, to the asyncio thread (``stores.asyncio_thread``) once, never one query at a
time. The queries live in ``_accounts`` and ``_todos``; this module owns the pool and the
timeout; ``_errors`` maps the driver's errors (none escapes).

Cancellation: cancelling a caller cancels the asyncio task; the connection it held is
closed, not returned to the pool (its server may be hung: asyncpg would wait for it to
confirm the cancellation), and the pool opens a new one when needed.

Failover (a replicated database, docs/operations.md): the URL may name every node
(``target_session_attrs=read-write``; ``_hosts`` connects to whichever is the primary). When
the primary goes away, an operation fails in one of two ways, and is retried on a new
connection, with short pauses, until the operation's deadline (``timeout``):

    it surely did not happen → always retried: no connection could be opened (or none to a
        read-write server), or the server refused to write (``ReadOnlySQLTransactionError``:
        a demoted primary);
    it may have happened → retried only when repeating it is harmless (``_repeatable``):
        reads, purging tombstones, migrating, and writes with an idempotency key (the retry
        finds the first attempt's result if it committed); the connection was lost
        mid-operation or the server was shut down.

The connection that failed is closed, not returned to the pool. Whatever is still failing at
the deadline is ``StoreUnavailable`` (503).
"""

from __future__ import annotations

import asyncio
import contextlib
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
from nursery.stores.postgres._errors import (
    DRIVER_ERRORS,
    LOST_MID_OPERATION,
    NO_CONNECTION,
    translate,
)
from nursery.stores.postgres._hosts import primary_connector
from nursery.stores.postgres.migrate import apply_migrations
from nursery.stores.todo_methods import TodoMethods
from nursery.stores.todo_methods import fingerprint as _fingerprint
from nursery.stores.todo_methods import known_uuid as _known_id
from nursery.stores.todo_methods import parse_uuid as _uuid

log = logging.getLogger(__name__)
T = TypeVar("T")

RETRY_PAUSE = 0.05  # seconds before the first retry of an operation during a failover
RETRY_PAUSE_MAX = 0.5  # the pause doubles up to this


class _Failover(Exception):
    """An operation failed because its server went away or stopped being the primary."""

    def __init__(self, cause: BaseException, *, maybe_applied: bool) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.maybe_applied = maybe_applied


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
        self.retries = 0  # operations tried again after a failover-like failure

    async def _run(self, op: Callable[..., Awaitable[T]], *args: Any, name: str = "") -> T:
        """``op(connection, *args)`` on a pooled connection, retried across a failover (see
        the module docstring and ``_repeatable``), all within ``timeout``."""
        started = time.perf_counter()
        deadline = trio.current_time() + self._timeout
        pause = RETRY_PAUSE
        ok = False
        try:
            while True:
                try:
                    # A plain scope, not fail_after (a generator: measurably slower, on every
                    # operation).
                    with trio.CancelScope(deadline=deadline) as timer:
                        result: T = await self._aio.run(self._on_connection, op, *args)
                    if timer.cancelled_caught:
                        raise StoreUnavailable("the database did not answer in time")
                    ok = True
                    return result
                except _Failover as failure:
                    if (failure.maybe_applied and not _repeatable(op, args)) or (
                            trio.current_time() + pause >= deadline):
                        raise translate(failure.cause) from failure.cause
                    self.retries += 1
                    await trio.sleep(pause)
                    pause = min(RETRY_PAUSE_MAX, pause * 2)
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
        # No asyncpg-level timeouts: the Trio deadline in ``_run`` bounds the whole operation.
        try:
            conn = await self._pool.acquire()
        except NO_CONNECTION as exc:
            raise _Failover(exc, maybe_applied=False) from exc
        try:
            return await op(conn, *args)
        except asyncpg.exceptions.ReadOnlySQLTransactionError as exc:
            _discard(conn)  # a demoted primary: this connection will never write again
            raise _Failover(exc, maybe_applied=False) from exc
        except LOST_MID_OPERATION as exc:
            _discard(conn)
            raise _Failover(exc, maybe_applied=True) from exc
        except asyncpg.exceptions.InternalClientError as exc:
            if not conn.is_closed() and not _ended_mid_operation(exc):
                raise
            # The server ended the session mid-operation and asyncpg's protocol noticed
            # first (MagicStack/asyncpg#1069): the connection is stuck mid-state and
            # must not go back to the pool; to the caller it is a lost connection.
            _discard(conn)
            raise _Failover(StoreUnavailable("the database connection was lost mid-operation"),
                            maybe_applied=True) from exc
        except asyncio.CancelledError:
            _discard(conn)  # see the module docstring (Cancellation)
            raise
        finally:
            await self._pool.release(conn)

    # -- lifecycle ------------------------------------------------------------------------------

    async def ping(self) -> None:
        await self._run(_ping)

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

def _repeatable(op: Callable[..., Any], args: tuple[Any, ...]) -> bool:
    """Whether running ``op`` again after it may have happened is harmless: reads (and purging
    tombstones, migrating), and writes with an idempotency key, whose retry finds the first
    attempt's result if it committed (``_todos.write(user, apply, key, fingerprint)``)."""
    if op is _todos.write:
        return args[2] is not None
    return op in _REPEATABLE


def _discard(conn: Any) -> None:
    """Close a pooled connection instead of reusing it (a lost one may have been handed back
    to the pool already by asyncpg: nothing left to do then)."""
    with contextlib.suppress(asyncpg.InterfaceError):
        conn.terminate()


def _ended_mid_operation(exc: asyncpg.exceptions.InternalClientError) -> bool:
    return "another operation" in str(exc)  # "cannot switch to state N; another operation ..."


async def _ping(conn: asyncpg.Connection) -> None:
    """The server answers and takes writes (a standby, or a primary being demoted, does not:
    /readyz must say 503 while no primary is reachable)."""
    if await conn.fetchval("SELECT pg_is_in_recovery()"):
        raise asyncpg.exceptions.ReadOnlySQLTransactionError("the server is a standby")


_REPEATABLE: frozenset[Callable[..., Any]] = frozenset({
    _ping, apply_migrations, _accounts.credentials, _accounts.get_user, _accounts.live_session,
    _accounts.list_sessions, _todos.get_todo, _todos.list_todos, _todos.changes_since,
    _todos.purge_tombstones,
})


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
    connect_timeout: float = 2.0,
    observe: Observe | None = None,
) -> AsyncIterator[PostgresStore]:
    """Connect, apply migrations, yield the store; close the pool on exit. ``url`` may name
    several hosts (``_hosts``); ``connect_timeout`` bounds each host's connection attempt.

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
                connect=primary_connector(url, connect_timeout),
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
