"""The client's errors (the hierarchy is drawn in ``nursery.client``)."""

from __future__ import annotations

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

