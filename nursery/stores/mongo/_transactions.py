"""Multi-document transactions with bounded retries. Asyncio side.

MongoDB aborts a transaction that writes a document another open transaction has written
(WriteConflict) instead of making it wait; the error carries the ``TransientTransactionError``
label, and so do failovers and network errors before the commit. The driver's
``with_transaction`` retries those for up to 120 s, far past any request's patience, so this
module retries itself: at most ``MAX_ATTEMPTS`` runs of the body, with jittered exponential
backoff, all inside the store operation's timeout (which the trio side enforces).

A commit whose outcome is unknown (``UnknownTransactionCommitResult``: the connection broke
after the commit was sent) is committed again, up to ``MAX_COMMIT_ATTEMPTS`` times: retrying
``commitTransaction`` on the same session is idempotent on the server, so the body's writes
happen once or not at all, never twice.

Transactions need a replica set (a single-node one is enough); ``_schema.check_deployment``
refuses to start without one.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

from pymongo.errors import DuplicateKeyError, PyMongoError
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

MAX_ATTEMPTS = 12
MAX_COMMIT_ATTEMPTS = 4
BACKOFF_INITIAL = 0.002  # seconds; doubled each attempt, up to BACKOFF_MAX, times a random 0.5-1
BACKOFF_MAX = 0.1

TRANSIENT = "TransientTransactionError"
UNKNOWN_COMMIT = "UnknownTransactionCommitResult"

# Writes see, and reads return, one snapshot; commits wait for a majority (survive failover).
SNAPSHOT = ReadConcern("snapshot")
MAJORITY = WriteConcern("majority")

type Body[T] = Callable[[Any], Awaitable[T]]  # called with the session; every operation must pass it


def is_transient(exc: BaseException) -> bool:
    """Worth running the whole transaction again.

    A duplicate key counts: two first writes of a new user both insert its revision counter
    (an upsert); the loser sees the winner's document on the next attempt.
    """
    if isinstance(exc, DuplicateKeyError):
        return True
    return isinstance(exc, PyMongoError) and exc.has_error_label(TRANSIENT)


def backoff(attempt: int) -> float:
    return min(BACKOFF_INITIAL * 2.0 ** (attempt - 1), BACKOFF_MAX) * (0.5 + random.random() / 2)


async def run_transaction[T](client: Any, body: Body[T], *, attempts: int = MAX_ATTEMPTS) -> T:
    """Run ``body(session)`` in one transaction and commit it; retry on transient errors.

    Raises the last transient error once ``attempts`` runs failed, and anything else the body
    raises at once (the transaction is aborted first, so none of its writes persist).
    """
    async with client.start_session() as session:
        attempt = 0
        while True:
            attempt += 1
            await session.start_transaction(read_concern=SNAPSHOT, write_concern=MAJORITY)
            try:
                result = await body(session)
            except BaseException as exc:
                if session.in_transaction:
                    await _abort_quietly(session)
                if is_transient(exc) and attempt < attempts:
                    await asyncio.sleep(backoff(attempt))
                    continue
                raise
            try:
                await _commit(session)
            except PyMongoError as exc:
                if is_transient(exc) and attempt < attempts:
                    await asyncio.sleep(backoff(attempt))
                    continue
                raise
            return result


async def _commit(session: Any) -> None:
    for attempt in range(1, MAX_COMMIT_ATTEMPTS + 1):
        try:
            await session.commit_transaction()
            return
        except PyMongoError as exc:
            if not exc.has_error_label(UNKNOWN_COMMIT) or attempt == MAX_COMMIT_ATTEMPTS:
                raise
            await asyncio.sleep(backoff(attempt))


async def _abort_quietly(session: Any) -> None:
    """Abort after a failed body. The server drops an abandoned transaction by itself
    (transactionLifetimeLimitSeconds), so a failed abort only matters to the log."""
    try:
        await session.abort_transaction()
    except PyMongoError:
        pass
