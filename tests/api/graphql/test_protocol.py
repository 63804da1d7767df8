"""graphql-transport-ws messages, parsed and built without sockets."""

from __future__ import annotations

import json

import pytest

from nursery.protocol import graphql_ws as protocol
from nursery.protocol.graphql_ws import (
    BAD_MESSAGE,
    Complete,
    ConnectionInit,
    Ping,
    Pong,
    ProtocolError,
    Subscribe,
    parse,
)


@pytest.mark.parametrize(("frame", "expected"), [
    ('{"type": "connection_init"}', ConnectionInit(None)),
    ('{"type": "connection_init", "payload": {"token": "t"}}', ConnectionInit("t")),
    ('{"type": "connection_init", "payload": {"Authorization": "Bearer t"}}', ConnectionInit("t")),
    ('{"type": "connection_init", "payload": {"authorization": "bearer  t "}}', ConnectionInit("t")),
    ('{"type": "connection_init", "payload": {"Authorization": "Basic t"}}', ConnectionInit(None)),
    ('{"type": "connection_init", "payload": {"token": 5}}', ConnectionInit(None)),
    ('{"type": "connection_init", "payload": {"token": "' + "t" * 5000 + '"}}', ConnectionInit(None)),
    ('{"type": "ping", "payload": {"x": 1}}', Ping()),
    ('{"type": "pong"}', Pong()),
    ('{"type": "subscribe", "id": "a", "payload": {"query": "{ me { id } }"}}',
     Subscribe("a", {"query": "{ me { id } }"})),
    ('{"type": "complete", "id": "a"}', Complete("a")),
])
def test_client_messages(frame: str, expected: protocol.ClientMessage) -> None:
    assert parse(frame) == expected


@pytest.mark.parametrize("frame", [
    b"{}", "", "nope", "[]", "null", '{"type": 1}', '{"type": "next", "id": "a"}',
    '{"type": "subscribe", "id": "a"}', '{"type": "subscribe", "id": "a", "payload": []}',
    '{"type": "subscribe", "id": "", "payload": {}}', '{"type": "subscribe", "payload": {}}',
    '{"type": "complete"}', '{"type": "complete", "id": 3}',
    '{"type": "complete", "id": "' + "x" * 129 + '"}',
    '{"type": "connection_init", "payload": "t"}', "[" * 100_000,
])
def test_anything_else_is_a_bad_message(frame: str | bytes) -> None:
    with pytest.raises(ProtocolError) as raised:
        parse(frame)
    assert raised.value.code == BAD_MESSAGE


def test_server_messages() -> None:
    assert json.loads(protocol.connection_ack()) == {"type": "connection_ack"}
    assert json.loads(protocol.next_("a", {"data": {"x": 1}})) == {
        "id": "a", "type": "next", "payload": {"data": {"x": 1}}}
    assert json.loads(protocol.error("a", [{"message": "m"}])) == {
        "id": "a", "type": "error", "payload": [{"message": "m"}]}
    assert json.loads(protocol.complete("a")) == {"id": "a", "type": "complete"}
    assert json.loads(protocol.PING) == {"type": "ping"}
    assert json.loads(protocol.PONG) == {"type": "pong"}
