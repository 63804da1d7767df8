"""The client's errors (the hierarchy is drawn in ``nursery.client``)."""

from __future__ import annotations

import os
from typing import Any


class ClientError(Exception):
    """Base of the errors this module raises on purpose."""


class SessionEnded(ClientError):
    """The server ended the session for good (close code 4001 or HTTP 401): log in again."""


class RequestFailed(ClientError):
    def __init__(self, status: int, body: Any) -> None:
        error = body.get("error", {}) if isinstance(body, dict) else {}
        message = error.get("message") if isinstance(error, dict) else None
        super().__init__(f"HTTP {status}: {message or body!r}")
        self.status = status
        self.body = body


class ProtocolViolation(ClientError):
    """A frame from the server that this client cannot understand (a bug on one side)."""



def describe(exc: BaseException) -> str:
    """What went wrong, in words, for network errors whose own text says little (trio-websocket's
    ``HandshakeError()``, httpx's "all attempts to connect ... failed"): the OS error found in
    the chain of causes and exception groups ("connection refused"), else the text or the type."""
    found = _os_error(exc, set())
    if found is not None:
        text = os.strerror(found.errno) if found.errno else str(found.strerror)
        return text[:1].lower() + text[1:]
    if isinstance(exc, TimeoutError) or type(exc).__name__ in ("TooSlowError", "ConnectTimeout",
                                                                "ReadTimeout"):
        return "timed out"
    return str(exc) or type(exc).__name__


def _os_error(exc: BaseException | None, seen: set[int]) -> OSError | None:
    if exc is None or id(exc) in seen:
        return None
    seen.add(id(exc))
    if isinstance(exc, OSError) and (exc.errno or exc.strerror):
        return exc
    inner: list[BaseException | None] = [exc.__cause__, exc.__context__]
    if isinstance(exc, BaseExceptionGroup):
        inner = [*exc.exceptions, *inner]
    for candidate in inner:
        found = _os_error(candidate, seen)
        if found is not None:
            return found
    return None
