"""What travels on the broker: small events, encoded as bytes. No I/O.

Publishers are the services; the hub decodes and routes by ``user_id``. A todo change is by
far the most frequent event: it travels as ``T <user> <rev> <time> <change as JSON>``, the
JSON rendered once by the writer (``models.rendered``) and sent on to every device as is, so
no instance parses or renders it again. The rarer events are JSON objects with a kind ``k``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Literal

from nursery.models import Change, Session, change_from_json, rendered
from nursery.pubsub.broker import EVERYONE

_TODO = b"T "


@dataclass(frozen=True, slots=True)
class TodoChanged:
    """A todo of ``user_id`` changed at revision ``rev``: ``change_json`` is the change as JSON
    text (``Change.to_json``); ``published_at``: unix time, for the sync lag metric."""

    user_id: str
    rev: int
    change_json: str
    published_at: float = 0.0

    @classmethod
    def of(cls, user_id: str, change: Change) -> TodoChanged:
        return cls(user_id, change.rev, rendered(change)[0], time.time())

    @property
    def change(self) -> Change:
        """The change as a model (parsed each time: only GraphQL's readers need it)."""
        return change_from_json(json.loads(self.change_json))


@dataclass(frozen=True, slots=True)
class SessionChanged:
    """A device logged in (``created``) or was revoked: revoked sessions' sockets close."""

    user_id: str
    op: Literal["created", "revoked"]
    session: dict[str, Any]  # Session.to_json()
    session_id: str


@dataclass(frozen=True, slots=True)
class PresenceChanged:
    user_id: str


Event = TodoChanged | SessionChanged | PresenceChanged


def session_changed(op: Literal["created", "revoked"], session: Session) -> SessionChanged:
    return SessionChanged(session.user_id, op, session.to_json(), session.id)


def topic(event: Event) -> str:
    """The broker topic an event travels on: its user's, but a revocation goes to every
    instance (each forgets the session in its cache, those with its sockets close them)."""
    if isinstance(event, SessionChanged) and event.op == "revoked":
        return EVERYONE
    return event.user_id


def encode(event: Event) -> bytes:
    match event:
        case TodoChanged(user_id, rev, change_json, published_at):
            return f"T {user_id} {rev} {published_at!r} {change_json}".encode()
        case SessionChanged(user_id, op, session, _):
            body: dict[str, Any] = {"k": "session", "u": user_id, "op": op, "s": session}
        case PresenceChanged(user_id):
            body = {"k": "presence", "u": user_id}
    return json.dumps(body, separators=(",", ":")).encode()


def decode(payload: bytes) -> Event:
    """Raises ``ValueError`` (or ``KeyError``) on a payload this version does not know."""
    if payload.startswith(_TODO):
        _, user_id, rev, published_at, change_json = payload.split(b" ", 4)
        return TodoChanged(user_id.decode(), int(rev), change_json.decode(), float(published_at))
    body = json.loads(payload)
    match body.get("k"):
        case "session":
            return SessionChanged(body["u"], body["op"], body["s"], body["s"]["id"])
        case "presence":
            return PresenceChanged(body["u"])
    raise ValueError(f"unknown event kind {body.get('k')!r}")
