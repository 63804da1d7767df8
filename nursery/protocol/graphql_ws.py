"""The ``graphql-transport-ws`` protocol (graphql-ws, Apollo): parse client messages, build
server messages. No I/O.

Every message is a JSON object with a ``type``. Client → server: ``connection_init`` (first,
once), ``ping``/``pong`` (any time), ``subscribe`` (``id`` + ``payload``: a GraphQL request),
``complete`` (``id``: stop that operation). Server → client: ``connection_ack``, ``ping``/
``pong``, ``next`` (a result), ``error`` (the operation failed before producing results),
``complete`` (the operation is done).

Anything that is not such a message is a ``ProtocolError`` carrying the protocol's close code
(``close_codes.GRAPHQL_*``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from nursery.protocol.close_codes import GRAPHQL_BAD_MESSAGE as BAD_MESSAGE
from nursery.protocol.close_codes import ProtocolError

SUBPROTOCOL = "graphql-transport-ws"

MAX_ID = 128
MAX_TOKEN = 4096


@dataclass(frozen=True, slots=True)
class ConnectionInit:
    token: str | None


@dataclass(frozen=True, slots=True)
class Ping:
    pass


@dataclass(frozen=True, slots=True)
class Pong:
    pass


@dataclass(frozen=True, slots=True)
class Subscribe:
    id: str
    payload: dict[str, Any]  # a GraphQL request, checked by ``engine.GraphQLRequest``


@dataclass(frozen=True, slots=True)
class Complete:
    id: str


ClientMessage = ConnectionInit | Ping | Pong | Subscribe | Complete


def parse(frame: str | bytes) -> ClientMessage:
    """Raises ``ProtocolError`` (4400) for anything that is not a client message."""
    if not isinstance(frame, str):
        raise ProtocolError(BAD_MESSAGE, "messages must be text")
    try:
        body = json.loads(frame)
    except (ValueError, RecursionError):
        raise ProtocolError(BAD_MESSAGE, "messages must be JSON") from None
    if not isinstance(body, dict):
        raise ProtocolError(BAD_MESSAGE, "messages must be JSON objects")
    match body.get("type"):
        case "connection_init":
            return ConnectionInit(_token(_object(body.get("payload"), "payload")))
        case "ping":
            return Ping()
        case "pong":
            return Pong()
        case "subscribe":
            payload = body.get("payload")
            if not isinstance(payload, dict):
                raise ProtocolError(BAD_MESSAGE, "subscribe needs a payload object")
            return Subscribe(_id(body), payload)
        case "complete":
            return Complete(_id(body))
    raise ProtocolError(BAD_MESSAGE, "unknown message type")


def _object(value: Any, name: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProtocolError(BAD_MESSAGE, f"{name} must be an object")
    return value


def _id(body: dict[str, Any]) -> str:
    value = body.get("id")
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ID:
        raise ProtocolError(BAD_MESSAGE, f"id must be a string of 1 to {MAX_ID} characters")
    return value


def _token(payload: dict[str, Any]) -> str | None:
    """The bearer token of ``connection_init``: ``{"token": T}`` or, as HTTP headers are
    often forwarded, ``{"Authorization": "Bearer T"}`` (any case)."""
    token = payload.get("token")
    if token is None:
        header = next((v for k, v in payload.items() if k.lower() == "authorization"), None)
        token = bearer_token(header) if isinstance(header, str) else None
    if token is not None and not (isinstance(token, str) and 0 < len(token) <= MAX_TOKEN):
        return None  # refused at authentication, like a missing one
    return token


def bearer_token(header: str) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` value (scheme in any case)."""
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def _dump(body: dict[str, Any]) -> str:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def connection_ack() -> str:
    return _dump({"type": "connection_ack"})


def next_(op_id: str, result: dict[str, Any]) -> str:
    return _dump({"id": op_id, "type": "next", "payload": result})


def error(op_id: str, errors: list[dict[str, Any]]) -> str:
    return _dump({"id": op_id, "type": "error", "payload": errors})


def complete(op_id: str) -> str:
    return _dump({"id": op_id, "type": "complete"})


PING = _dump({"type": "ping"})
PONG = _dump({"type": "pong"})
