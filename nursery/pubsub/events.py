"""What travels on the broker: small events, encoded as JSON bytes. No I/O.

Publishers are the services; the hub decodes and routes by ``user_id``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from nursery.models import Change, Session, change_from_json


@dataclass(frozen=True, slots=True)
class TodoChanged:
    user_id: str
    change: Change


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


def encode(event: Event) -> bytes:
    match event:
        case TodoChanged(user_id, change):
            body: dict[str, Any] = {"k": "todo", "u": user_id, "c": change.to_json()}
        case SessionChanged(user_id, op, session, _):
            body = {"k": "session", "u": user_id, "op": op, "s": session}
        case PresenceChanged(user_id):
            body = {"k": "presence", "u": user_id}
    return json.dumps(body, separators=(",", ":")).encode()


def decode(payload: bytes) -> Event:
    """Raises ``ValueError`` (or ``KeyError``) on a payload this version does not know."""
    body = json.loads(payload)
    match body.get("k"):
        case "todo":
            return TodoChanged(body["u"], change_from_json(body["c"]))
        case "session":
            return SessionChanged(body["u"], body["op"], body["s"], body["s"]["id"])
        case "presence":
            return PresenceChanged(body["u"])
    raise ValueError(f"unknown event kind {body.get('k')!r}")
