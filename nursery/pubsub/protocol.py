"""The /ws sync protocol (DESIGN.md): parse client frames, build server frames. No I/O.

Client frames are JSON objects with a ``type``: ``hello`` (first, once), ``ping``, ``pong``.
Anything else is a protocol error carrying the close code to use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from nursery.models import Change

# Close codes.
NORMAL = 1000
RESTARTING = 1012  # the instance is going away: reconnect now and resume
UNAUTHENTICATED = 4001  # no, bad, late or revoked credentials: do not reconnect
TOO_SLOW = 4008  # the client did not keep up (or went silent): reconnect and resume
TOO_BIG = 1009
BAD_MESSAGE = 1008
RATE_LIMITED = 4029

MAX_TOKEN = 4096


class ProtocolError(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Hello:
    token: str
    since: int | None


@dataclass(frozen=True, slots=True)
class Ping:
    pass


@dataclass(frozen=True, slots=True)
class Pong:
    pass


ClientFrame = Hello | Ping | Pong


def parse(frame: str | bytes) -> ClientFrame:
    """Raises ``ProtocolError`` (1008) for anything that is not a valid client frame."""
    if not isinstance(frame, str):
        raise ProtocolError(BAD_MESSAGE, "frames must be text")
    try:
        body = json.loads(frame)
    except (ValueError, RecursionError):  # nested deeper than the parser recurses: not JSON to us
        raise ProtocolError(BAD_MESSAGE, "frames must be JSON") from None
    if not isinstance(body, dict):
        raise ProtocolError(BAD_MESSAGE, "frames must be JSON objects")
    match body.get("type"):
        case "ping":
            return Ping()
        case "pong":
            return Pong()
        case "hello":
            return _hello(body)
    raise ProtocolError(BAD_MESSAGE, "unknown frame type")


def _hello(body: dict[str, Any]) -> Hello:
    token, since = body.get("token"), body.get("since")
    if not isinstance(token, str) or not 0 < len(token) <= MAX_TOKEN:
        raise ProtocolError(UNAUTHENTICATED, "hello needs a token")
    if since is not None and (type(since) is not int or since < 0):
        raise ProtocolError(BAD_MESSAGE, "since must be null or a revision (integer >= 0)")
    return Hello(token, since)


def _dump(body: dict[str, Any]) -> str:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def welcome(session_id: str, instance: str, rev: int) -> str:
    return _dump({"type": "welcome", "session": session_id, "instance": instance, "rev": rev})


def change(item: Change) -> str:
    return _dump({"type": "change", **item.to_json()})


def reset(rev: int) -> str:
    return _dump({"type": "reset", "rev": rev})


def session_event(op: str, session: dict[str, Any]) -> str:
    return _dump({"type": "session", "op": op, "session": session})


def presence(online: list[str]) -> str:
    return _dump({"type": "presence", "online": online})


PING = _dump({"type": "ping"})
PONG = _dump({"type": "pong"})
