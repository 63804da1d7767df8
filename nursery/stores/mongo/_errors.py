"""PyMongo's errors → ours: the one place (the store contract never lets a driver's out).

    the database is not there, or cannot take the operation now → StoreUnavailable (503)
        connections lost or refused, server selection or operation timeouts, a node stepping
        down or shutting down, transient transaction errors (a duplicate key counts: two
        first writes of a new user) and unknown commit results that outlived their retries
    anything else (a bug, a bad document, a refused command) → StoreFailed (500, logged)
"""

from __future__ import annotations

import asyncio

import bson.errors
from pymongo.errors import (
    ConnectionFailure,
    ExecutionTimeout,
    PyMongoError,
    WTimeoutError,
)

from nursery.errors import NurseryError, StoreFailed, StoreUnavailable
from nursery.stores.mongo._transactions import UNKNOWN_COMMIT, is_transient

UNAVAILABLE = (OSError, asyncio.TimeoutError, ConnectionFailure, ExecutionTimeout, WTimeoutError)
# Server errors of a node that is stepping down or shutting down (retried by the driver once).
UNAVAILABLE_CODES = frozenset({91, 189, 10107, 11600, 11602, 13435, 13436})


def unavailable(exc: BaseException) -> bool:
    """The database cannot take the operation now (as opposed to: it refused it)."""
    if isinstance(exc, UNAVAILABLE) or is_transient(exc):
        return True
    if not isinstance(exc, PyMongoError):
        return False
    return exc.has_error_label(UNKNOWN_COMMIT) or getattr(exc, "code", None) in UNAVAILABLE_CODES


def translate(exc: BaseException) -> NurseryError:
    """Our error for a driver's (or the OS's) ``exc``; raise it ``from exc``."""
    if isinstance(exc, NurseryError):
        return exc
    if unavailable(exc):
        return StoreUnavailable(f"MongoDB is unavailable ({type(exc).__name__})")
    return StoreFailed(f"MongoDB refused the operation ({type(exc).__name__})")


# Everything PyMongo (and BSON) may raise: what ``translate`` must map (the completeness test).
DRIVER_ERRORS: tuple[type[BaseException], ...] = (
    PyMongoError,
    bson.errors.BSONError,
    OSError,
    asyncio.TimeoutError,
)
