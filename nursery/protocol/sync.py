"""/ws, the sync protocol: its messages, built and parsed. No I/O.

Text frames, one JSON object each, with a ``type``:

    client → server   hello {token, since}  (first, once), ping, pong
    server → client   welcome {session, instance, rev}, change {rev, op, todo | id},
                      reset {rev}, session {op, session}, presence {online}, ping, pong

The server parses the client's frames with ``parse`` (anything else is a ``ProtocolError``
carrying its close code) and builds its own with the functions below; a client does the
reverse with ``hello`` and ``parse_server``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from nursery.protocol.close_codes import BAD_MESSAGE, UNAUTHENTICATED, ProtocolError

MAX_TOKEN = 4096


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


def _object(frame: str | bytes, what: str) -> dict[str, Any]:
    if not isinstance(frame, str):
        raise ProtocolError(BAD_MESSAGE, f"{what} must be text")
    try:
        body = json.loads(frame)
    except (ValueError, RecursionError):  # nested deeper than the parser recurses: not JSON to us
        raise ProtocolError(BAD_MESSAGE, f"{what} must be JSON") from None
    if not isinstance(body, dict):
        raise ProtocolError(BAD_MESSAGE, f"{what} must be JSON objects")
    return body


def parse(frame: str | bytes) -> ClientFrame:
    """A client's frame; raises ``ProtocolError`` (1008, or 4001 for a hello without a
    token) for anything else."""
    body = _object(frame, "frames")
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


def parse_server(frame: str | bytes) -> dict[str, Any]:
    """A server's frame as a dict with a string ``type``; raises ``ProtocolError`` (1008)
    for anything else. (Clients check each type's fields as they use them.)"""
    body = _object(frame, "server frames")
    if not isinstance(body.get("type"), str):
        raise ProtocolError(BAD_MESSAGE, "server frames need a type")
    return body


def dump(body: dict[str, Any]) -> str:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def hello(token: str, since: int | None) -> str:
    return dump({"type": "hello", "token": token, "since": since})


def welcome(session_id: str, instance: str, rev: int) -> str:
    return dump({"type": "welcome", "session": session_id, "instance": instance, "rev": rev})


def change(change_json: dict[str, Any]) -> str:
    """``change_json``: ``{rev, op: "upsert", todo}`` or ``{rev, op: "delete", id}``."""
    return dump({"type": "change", **change_json})


def change_from_text(change_text: str) -> str:
    """``change`` from that object already as JSON text (no parsing: one concatenation)."""
    return '{"type":"change",' + change_text[1:]


def reset(rev: int) -> str:
    return dump({"type": "reset", "rev": rev})


def session_event(op: str, session: dict[str, Any]) -> str:
    return dump({"type": "session", "op": op, "session": session})


def presence(online: list[str]) -> str:
    return dump({"type": "presence", "online": online})


PING = dump({"type": "ping"})
PONG = dump({"type": "pong"})
