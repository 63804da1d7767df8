"""The error hierarchy. Drivers' errors are translated into these at the store and broker
boundaries (``raise X(...) from exc``); the API maps them to the JSON error shape in one place
(``nursery/api/errors.py``).

    NurseryError
    ├── MalformedInput        400  not JSON, not UTF-8, not an object
    ├── InvalidInput          422  bad field values (details: per-field messages)
    ├── Unauthenticated       401  no token, bad token, revoked or expired session
    ├── NotFound              404  also for other users' ids: we never reveal they exist
    ├── Conflict              409  if_rev mismatch, email already registered
    ├── RateLimited           429  (retry_after seconds)
    ├── Unavailable           503  a dependency (database, broker) is down (retry_after)
    │   ├── StoreUnavailable
    │   ├── BrokerUnavailable
    │   └── RateLimiterUnavailable  the shared counters (Redis) cannot be reached; the
    │                              rate limits fail open or answer plain ``unavailable``
    ├── StoreFailed           500  the database refused an operation for a reason no client
    │                              can fix (a bug, a broken schema): logged, its cause chained
    ├── CannotListen               startup: the address to listen on is taken or not ours
    └── ConfigError                startup: a setting's value is not valid (``config.py``)
"""

from __future__ import annotations

from typing import Any


class NurseryError(Exception):
    status = 500
    code = "internal"

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class MalformedInput(NurseryError):
    status = 400
    code = "malformed"


class InvalidInput(NurseryError):
    status = 422
    code = "invalid_input"


class Unauthenticated(NurseryError):
    status = 401
    code = "unauthenticated"


class NotFound(NurseryError):
    status = 404
    code = "not_found"


class Conflict(NurseryError):
    status = 409
    code = "conflict"


class RateLimited(NurseryError):
    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: float, details: Any = None) -> None:
        super().__init__(message, details=details)
        self.retry_after = retry_after


class Unavailable(NurseryError):
    status = 503
    code = "unavailable"
    retry_after = 2.0


class StoreUnavailable(Unavailable):
    code = "store_unavailable"


class BrokerUnavailable(Unavailable):
    code = "broker_unavailable"


class RateLimiterUnavailable(Unavailable):
    code = "unavailable"


class StoreFailed(NurseryError):
    """A driver's error that is neither unavailability nor the caller's fault (``__cause__``
    holds it): the store contract's promise is never to let a driver's exception out."""

    code = "internal"


class CannotListen(NurseryError):
    code = "cannot_listen"
