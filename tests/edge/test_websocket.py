"""The edge's websocket (RFC 6455) against a reference client (wsproto, which trio-websocket
and Hypercorn use), over a real socket pair: frames, fragments, control frames, the close
handshake, limits and protocol violations."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from typing import Any

import pytest
import trio
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Message, Ping, Pong, TextMessage

from nursery.edge.websocket import (
    FRAMES_PER_CHECKPOINT,
    FrameLimits,
    WebSocket,
    accept_key,
    close_payload,
)
from nursery.protocol import close_codes
from nursery.protocol.close_codes import ProtocolError, TransportClosed
from nursery.rates import Rate

MAX = 1024


class Peer:
    """The client end: a wsproto connection on the other end of the socket pair. ``events``
    gives whole messages (wsproto hands them over in pieces)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.ws = Connection(ConnectionType.CLIENT)
        self._partial: list[Any] = []

    def send(self, event: Any) -> None:
        self.sock.sendall(self.ws.send(event))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    async def events(self, count: int = 1) -> list[Any]:
        got: list[Any] = []
        with trio.fail_after(5):
            while True:
                for event in self.ws.events():
                    if isinstance(event, Message):
                        self._partial.append(event.data)
                        if not event.message_finished:
                            continue
                        whole = type(event)(data=type(event.data)().join(self._partial))
                        self._partial = []
                        got.append(whole)
                    else:
                        got.append(event)
                if len(got) >= count:
                    return got
                await trio.lowlevel.wait_readable(self.sock)
                self.ws.receive_data(self.sock.recv(65536) or None)


@pytest.fixture
def pair() -> Iterator[tuple[WebSocket, Peer]]:
    server, client = socket.socketpair()
    server.setblocking(False)
    client.setblocking(False)
    yield WebSocket(server, limits=FrameLimits(max_message=MAX)), Peer(client)
    server.close()
    client.close()


def masked(opcode: int, payload: bytes, *, fin: bool = True, mask: bytes = b"abcd") -> bytes:
    data = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    head = bytes(((0x80 if fin else 0) | opcode, 0x80 | len(payload)))
    return head + mask + data


def test_the_accept_key_of_the_rfc() -> None:
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    with pytest.raises(ValueError):
        accept_key("not base64!")
    with pytest.raises(ValueError):
        accept_key("c2hvcnQ=")  # 5 bytes, not 16


async def test_text_and_binary_both_ways(pair: tuple[WebSocket, Peer]) -> None:
    ws, peer = pair
    peer.send(TextMessage("héllo"))
    peer.send(BytesMessage(b"\x00\x01"))
    assert await ws.receive() == "héllo"
    assert await ws.receive() == b"\x00\x01"
    ws.send("x" * 70_000)  # a 64-bit length
    ws.send("y" * 300)  # a 16-bit length
    await ws.drain()
    events = await peer.events(2)
    assert [e.data for e in events] == ["x" * 70_000, "y" * 300]


async def test_fragments_are_put_together_around_control_frames(pair: tuple[WebSocket, Peer]) -> None:
    ws, peer = pair
    peer.send(TextMessage("one ", message_finished=False))
    peer.send(Ping(b"p"))
    peer.send(TextMessage("two", message_finished=True))
    assert await ws.receive() == "one two"
    (pong,) = await peer.events()
    assert isinstance(pong, Pong) and pong.payload == b"p"


async def test_a_message_over_the_limit_is_1009(pair: tuple[WebSocket, Peer]) -> None:
    ws, peer = pair
    peer.send(TextMessage("x" * (MAX + 1)))
    with pytest.raises(ProtocolError) as raised:
        await ws.receive()
    assert raised.value.code == close_codes.TOO_BIG


async def test_fragments_over_the_limit_are_1009(pair: tuple[WebSocket, Peer]) -> None:
    ws, peer = pair
    for _ in range(3):
        peer.send(TextMessage("x" * (MAX // 2), message_finished=False))
    with pytest.raises(ProtocolError) as raised:
        await ws.receive()
    assert raised.value.code == close_codes.TOO_BIG


@pytest.mark.parametrize("frame, code", [
    (bytes((0x81, 0x02)) + b"hi", close_codes.PROTOCOL_VIOLATION),  # not masked
    (masked(0x1, b"hi")[:1].replace(b"\x81", b"\xc1") + masked(0x1, b"hi")[1:], close_codes.PROTOCOL_VIOLATION),  # RSV1
    (masked(0x0, b"hi"), close_codes.PROTOCOL_VIOLATION),  # a continuation of nothing
    (masked(0x3, b"hi"), close_codes.PROTOCOL_VIOLATION),  # a reserved opcode
    (masked(0x9, b"p", fin=False), close_codes.PROTOCOL_VIOLATION),  # a fragmented ping
    (masked(0x1, b"\xff\xfe"), close_codes.NOT_TEXT),  # not UTF-8
])
async def test_protocol_violations(pair: tuple[WebSocket, Peer], frame: bytes, code: int) -> None:
    ws, peer = pair
    peer.send_raw(frame)
    with pytest.raises(ProtocolError) as raised:
        await ws.receive()
    assert raised.value.code == code


async def test_our_close_then_theirs(pair: tuple[WebSocket, Peer]) -> None:
    ws, peer = pair

    async def answer() -> None:
        (close,) = await peer.events()
        assert isinstance(close, CloseConnection)
        assert (close.code, close.reason) == (4008, "too slow")
        peer.send(close.response())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(answer)
        with trio.fail_after(5):
            await ws.close(4008, "too slow")
    with pytest.raises(TransportClosed):
        ws.send("after the close")


async def test_their_close_is_answered(pair: tuple[WebSocket, Peer]) -> None:
    ws, peer = pair
    peer.send(CloseConnection(code=1001, reason="bye"))
    with pytest.raises(TransportClosed):
        await ws.receive()
    (answer,) = await peer.events()
    assert isinstance(answer, CloseConnection) and answer.code == 1001


async def test_a_long_reason_is_cut_on_a_character(pair: tuple[WebSocket, Peer]) -> None:
    payload = close_payload(1000, "é" * 100)
    assert len(payload) <= 125
    assert payload[2:].decode()  # still UTF-8


async def test_what_the_kernel_refuses_waits_in_the_outbox(pair: tuple[WebSocket, Peer]) -> None:
    ws, peer = pair
    for _ in range(200):  # far more than the socket pair buffers
        ws.send("z" * 10_000)
    assert ws.backlog > 0
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ws.drain)
        events = await peer.events(200)
    assert ws.backlog == 0
    assert all(isinstance(e, Message) and e.data == "z" * 10_000 for e in events)


async def test_a_closing_socket_finishes_the_frame_it_started(pair: tuple[WebSocket, Peer]) -> None:
    ws, peer = pair
    for _ in range(200):
        ws.send("z" * 10_000)

    async def read_all() -> None:
        with trio.fail_after(5):
            while True:
                for event in await peer.events():
                    if isinstance(event, CloseConnection):
                        assert event.code == 1012
                        peer.send(event.response())
                        return
                    assert event.data == "z" * 10_000  # never a torn frame

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_all)
        await ws.close(1012, "restarting")


def test_close_payload_packs_the_code() -> None:
    assert struct.unpack("!H", close_payload(4001, "")[:2]) == (4001,)


async def test_a_read_full_of_frames_lets_other_tasks_run() -> None:
    """1,000 pings in the buffer at once: they are parsed in batches, other tasks running
    between them (no connection can hold the instance for a whole read of tiny frames)."""
    server, client = socket.socketpair()
    server.setblocking(False)
    client.setblocking(False)
    pings = masked(0x9, b"p") * 1000
    ws = WebSocket(server, limits=FrameLimits(frame_rate=Rate(10**6, 1.0)), leftover=pings)
    seen: list[int] = []  # bytes still to parse, each time this task ran

    async def watch() -> None:
        while ws._buffer is not None:
            await trio.lowlevel.checkpoint()
            seen.append(len(ws._buffer or b""))

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ws.receive)
            await watch()
            nursery.cancel_scope.cancel()
    # ~8 batches; Trio runs each runnable task once per round in random order, so the parser
    # may run twice between two looks: at least half the batches are seen apart.
    between = {n for n in seen if 0 < n < len(pings)}
    assert len(between) >= 1000 // FRAMES_PER_CHECKPOINT // 2 - 1, sorted(between)
    server.close()
    client.close()


async def test_empty_fragments_count_toward_the_fragment_budget(pair: tuple[WebSocket, Peer]) -> None:
    ws, peer = pair
    peer.send_raw(masked(0x1, b"j", fin=False) + masked(0x0, b"", fin=False) * 2000)
    with pytest.raises(ProtocolError) as raised:
        await ws.receive()
    assert raised.value.code == close_codes.TOO_BIG
    assert "1024 frames" in raised.value.reason
