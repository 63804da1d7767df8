"""asyncpg's errors → ours: the one place (the store contract never lets a driver's out).

    the database is not there, or cannot take the operation now → StoreUnavailable (503)
        connections lost or refused, timeouts, too many connections, an administrator's
        shutdown, a serialization failure or deadlock (retry it), no read-write host among
        those of the URL, a server that is (or just became) read-only: a failover
    the caller's input broke a rule → Conflict (409, a unique value taken) or InvalidInput
        (422, a value the column cannot hold)
    anything else (a bug, a broken schema, a protocol error) → StoreFailed (500, logged)

Callers that know better map first (``_accounts.create_user``: a taken email).
"""

from __future__ import annotations

import asyncio

import asyncpg

from nursery.errors import Conflict, InvalidInput, NurseryError, StoreFailed, StoreUnavailable

UNAVAILABLE = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,  # also ConnectionDoesNotExistError, CannotConnectNow...
    asyncpg.InterfaceError,  # the connection or pool is closed or closing
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, crash shutdown
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections, disk full
    asyncpg.exceptions.TransactionRollbackError,  # serialization failure, deadlock: retry
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TargetServerAttributeNotMatched,  # only standbys answered
    asyncpg.exceptions.ReadOnlySQLTransactionError,  # a standby, or a demoted primary
)

# During a failover (the store's retry, store.py): opening a connection failed, so the
# operation never started...
NO_CONNECTION = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TargetServerAttributeNotMatched,
)
# ...or the connection died under the operation, which may or may not have committed.
LOST_MID_OPERATION = (
    OSError,
    asyncpg.PostgresConnectionError,  # ConnectionDoesNotExistError: closed mid-operation
    asyncpg.InterfaceError,  # "connection is closed"
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown (a demotion), crash
)


def translate(exc: BaseException) -> NurseryError:
    """Our error for a driver's (or the OS's) ``exc``; raise it ``from exc``."""
    if isinstance(exc, NurseryError):
        return exc
    if isinstance(exc, UNAVAILABLE):
        return StoreUnavailable(f"the database is unavailable ({type(exc).__name__})")
    if isinstance(exc, asyncpg.UniqueViolationError):
        return Conflict("that value is already taken")
    if isinstance(exc, asyncpg.exceptions.DataError):
        return InvalidInput("a value the database cannot store")
    return StoreFailed(f"the database refused the operation ({type(exc).__name__})")


# Everything asyncpg may raise: what ``translate`` must map (the completeness test checks).
DRIVER_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
    OSError,
    asyncio.TimeoutError,
)
