"""No driver's exception escapes a store or the broker: every exception class the drivers
define is mapped to one of ours by the driver's one mapping (``_errors.translate`` of each
store, ``pubsub.redis.unavailable_as_broker_error``). The classes are enumerated from the
drivers themselves, so a driver upgrade that adds one is checked too."""

from __future__ import annotations

from typing import Any

import bson.errors
import pymongo.errors
import pytest
import trio

from nursery.errors import (
    BrokerUnavailable,
    Conflict,
    InvalidInput,
    NurseryError,
    StoreFailed,
    StoreUnavailable,
)
from nursery.pubsub.redis import unavailable_as_broker_error
from nursery.redis import resp
from nursery.stores.mongo import _errors as mongo
from nursery.stores.postgres import _errors as postgres


def classes(bases: tuple[type[BaseException], ...], *modules: str) -> list[type[BaseException]]:
    """Every subclass of ``bases`` defined in ``modules`` (and the bases themselves)."""
    found: set[type[BaseException]] = set()
    stack = list(bases)
    while stack:
        cls = stack.pop()
        if cls not in found:
            found.add(cls)
            stack.extend(cls.__subclasses__())
    return sorted((c for c in found if c.__module__.startswith(modules)), key=lambda c: c.__name__)


ASYNCPG = classes(postgres.DRIVER_ERRORS, "asyncpg")
PYMONGO = classes(mongo.DRIVER_ERRORS, "pymongo", "bson")

# The few that need more than a message to be made.
SPECIAL: dict[str, Any] = {
    "EncryptedCollectionError": lambda cls: cls(Exception("x"), {}),
    "ClientBulkWriteException": lambda cls: cls({"writeErrors": []}, verbose=False),
    "BulkWriteError": lambda cls: cls({"writeErrors": []}),
}


def make(cls: type[BaseException]) -> BaseException:
    return SPECIAL.get(cls.__name__, lambda c: c("x"))(cls)


def test_every_asyncpg_error_becomes_ours() -> None:
    assert len(ASYNCPG) > 200  # the enumeration found the driver's classes
    for cls in ASYNCPG:
        assert isinstance(postgres.translate(make(cls)), NurseryError), cls


def test_every_pymongo_and_bson_error_becomes_ours() -> None:
    assert len(PYMONGO) > 20 and bson.errors.InvalidBSON in PYMONGO
    for cls in PYMONGO:
        assert isinstance(mongo.translate(make(cls)), NurseryError), cls


@pytest.mark.parametrize(("error", "ours"), [
    (postgres.asyncpg.ConnectionDoesNotExistError("x"), StoreUnavailable),
    (postgres.asyncpg.exceptions.AdminShutdownError("x"), StoreUnavailable),
    (postgres.asyncpg.exceptions.TooManyConnectionsError("x"), StoreUnavailable),
    (postgres.asyncpg.exceptions.SerializationError("x"), StoreUnavailable),
    (ConnectionRefusedError(), StoreUnavailable),
    (postgres.asyncpg.UniqueViolationError("x"), Conflict),
    (postgres.asyncpg.exceptions.StringDataRightTruncationError("x"), InvalidInput),
    (postgres.asyncpg.exceptions.UndefinedTableError("x"), StoreFailed),
    (pymongo.errors.AutoReconnect("x"), StoreUnavailable),
    (pymongo.errors.ServerSelectionTimeoutError("x"), StoreUnavailable),
    (pymongo.errors.OperationFailure("x", code=11600), StoreUnavailable),
    (pymongo.errors.DuplicateKeyError("x"), StoreUnavailable),  # retried, still racing
    (pymongo.errors.OperationFailure("x", code=2), StoreFailed),
    (bson.errors.InvalidDocument("x"), StoreFailed),
])
def test_what_each_kind_of_failure_means(error: BaseException, ours: type[NurseryError]) -> None:
    translate = postgres.translate if type(error).__module__.startswith(("asyncpg", "builtins")) \
        else mongo.translate
    assert type(translate(error)) is ours


@pytest.mark.parametrize("error", [
    resp.ConnectionLost("x"), resp.ReplyError("ERR x"), resp.RedisError("x"),
    ConnectionResetError(), trio.TooSlowError(),
])
async def test_every_redis_failure_is_broker_unavailable(error: BaseException) -> None:
    async def failing() -> None:
        await trio.lowlevel.checkpoint()
        raise error

    with pytest.raises(BrokerUnavailable) as raised:
        await unavailable_as_broker_error("test", failing())
    assert raised.value.__cause__ is error
