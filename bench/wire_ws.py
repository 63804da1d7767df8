"""The load generator's lean websocket client (why not trio-websocket: see wire.py).

- ``WebSocket``: the client side of RFC 6455 over ``ws://``: handshake, masked text frames
  out, unmasked frames in (fragments joined, pings answered, close → ``ConnectionClosed``).
- ``WebSocketGroup``: many websockets read by one task through one epoll set, so that a
  burst of frames on N sockets costs one Trio wakeup, not N (and no task per socket).
"""

from __future__ import annotations

import base64
import collections
import hashlib
import os
import select
import struct
from collections.abc import Callable
from urllib.parse import urlsplit

import trio
from wire import (
    END_OF_HEAD,
    RECEIVE_SIZE,
    TIMEOUT,
    Connection,
    ConnectionClosed,
    ProtocolError,
    host_port,
    parse_head,
)

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_CONTINUATION, _TEXT, _BINARY, _CLOSE, _PING, _PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def _mask(payload: bytes, key: bytes) -> bytes:
    n = len(payload)
    if not n:
        return payload
    keys = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(keys, "big")).to_bytes(n, "big")


def _frame(opcode: int, payload: bytes) -> bytes:
    """One client frame: FIN set, masked (clients must mask, RFC 6455 §5.3)."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    key = os.urandom(4)
    return head + key + _mask(payload, key)


class WebSocket:
    """A connected websocket (``connect_websocket`` opens one).

    ``await receive()`` returns the next message (str for text, bytes for binary); pings
    are answered on the way; a close frame or the end of the stream raises
    ``ConnectionClosed``. Messages can also come through a ``WebSocketGroup``."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self._messages: collections.deque[str | bytes] = collections.deque()
        self._replies: list[bytes] = []  # control frames owed to the server
        self._closed: ConnectionClosed | None = None
        self._fragments: list[bytes] = []
        self._fragment_opcode = _TEXT
        self._parse()  # bytes that came with the handshake response

    async def send_text(self, text: str) -> None:
        with trio.fail_after(TIMEOUT):
            await self.connection.send_all(_frame(_TEXT, text.encode()))

    def send_text_nowait(self, text: str) -> None:
        """Send a small frame without waiting; ``ConnectionClosed`` if the socket's send
        buffer is full (the server is not reading: the connection is as good as dead)."""
        self._send_nowait(_frame(_TEXT, text.encode()))

    def _send_nowait(self, data: bytes) -> None:
        try:
            sent = self.connection.sock.send(data)
        except BlockingIOError:
            sent = 0
        if sent != len(data):
            raise ConnectionClosed(None, "send buffer full: the server is not reading")

    async def receive(self) -> str | bytes:
        while not self._messages:
            if self._closed is not None:
                raise self._closed
            await self.connection.fill()
            self._parse()
            if self._replies:
                with trio.fail_after(TIMEOUT):
                    await self.connection.send_all(b"".join(self._replies))
                self._replies.clear()
        return self._messages.popleft()

    def _feed(self, data: bytes) -> None:
        """For ``WebSocketGroup``: bytes received; replies owed are sent without waiting."""
        self.connection.buffer += data
        self._parse()
        if self._replies:
            self._send_nowait(b"".join(self._replies))
            self._replies.clear()

    def _parse(self) -> None:
        """Every complete frame in the buffer: messages queued, control frames handled."""
        buf = self.connection.buffer
        while len(buf) >= 2:
            b0, b1 = buf[0], buf[1]
            n, at = b1 & 0x7F, 2
            if n == 126:
                if len(buf) < 4:
                    return
                n, at = struct.unpack_from("!H", buf, 2)[0], 4
            elif n == 127:
                if len(buf) < 10:
                    return
                n, at = struct.unpack_from("!Q", buf, 2)[0], 10
            masked = b1 & 0x80  # servers must not mask, but be lenient
            end = at + (4 if masked else 0) + n
            if len(buf) < end:
                return
            payload = bytes(buf[end - n:end])
            if masked:
                payload = _mask(payload, bytes(buf[at:at + 4]))
            del buf[:end]
            self._frame_received(bool(b0 & 0x80), b0 & 0x0F, payload)

    def _frame_received(self, fin: bool, opcode: int, payload: bytes) -> None:
        if self._closed is not None:
            return
        if opcode == _PING:
            self._replies.append(_frame(_PONG, payload))
        elif opcode == _CLOSE:
            code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
            self._replies.append(_frame(_CLOSE, payload[:2]))  # echo the close, as the protocol asks
            self._closed = ConnectionClosed(code, payload[2:].decode(errors="replace"))
        elif opcode in (_TEXT, _BINARY) and not self._fragments:
            if fin:
                self._messages.append(payload.decode() if opcode == _TEXT else payload)
            else:
                self._fragment_opcode, self._fragments = opcode, [payload]
        elif opcode == _CONTINUATION and self._fragments:
            self._fragments.append(payload)
            if fin:
                message, self._fragments = b"".join(self._fragments), []
                self._messages.append(message.decode() if self._fragment_opcode == _TEXT else message)
        elif opcode != _PONG:
            raise ProtocolError(f"unexpected frame (opcode {opcode}, fragmented: {bool(self._fragments)})")

    def close(self) -> None:
        """Close the TCP connection (no closing handshake: benchmarks tear down at once)."""
        self.connection.close()


DEFLATE_OFFER = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"


async def connect_websocket(url: str, *, timeout: float = TIMEOUT, offer_deflate: bool = False) -> WebSocket:
    """Open ``ws://host:port/path``: TCP connection and upgrade handshake, within ``timeout``.
    ``offer_deflate``: offer permessage-deflate, as every browser does (this client cannot
    inflate: a server that accepts it is refused with ``ProtocolError``)."""
    parts = urlsplit(url)
    host, port = host_port(url)
    key = base64.b64encode(os.urandom(16))
    request = (
        f"GET {parts.path or '/'}{'?' + parts.query if parts.query else ''} HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"{DEFLATE_OFFER if offer_deflate else ''}"
        f"Sec-WebSocket-Key: {key.decode()}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    with trio.fail_after(timeout):
        conn = await Connection.open(host, port)
        try:
            await conn.send_all(request)
            status, headers = parse_head(await conn.until(END_OF_HEAD))
            if status != 101:
                raise ProtocolError(f"websocket handshake refused: HTTP {status}")
            if headers.get(b"sec-websocket-accept") != base64.b64encode(hashlib.sha1(key + _GUID).digest()):
                raise ProtocolError("bad Sec-WebSocket-Accept")
            if b"sec-websocket-extensions" in headers:
                raise ProtocolError("the server accepted an extension")
        except BaseException:
            conn.close()
            raise
    return WebSocket(conn)


class WebSocketGroup:
    """Websockets read by one task: ``await group.serve(on_message)`` calls
    ``on_message(ws, message)`` for every message of every member, forever.

    The members' sockets are in one epoll set that Trio waits on as a whole, so frames on
    many sockets at once cost one wakeup. Pings are answered; a member whose connection ends
    is closed, dropped and counted in ``closed`` (``on_close(ws, error)`` if given).
    ``on_message`` may answer with ``ws.send_text_nowait``."""

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._members: dict[int, WebSocket] = {}
        self._early: list[WebSocket] = []  # added with messages already parsed
        self._added = trio.lowlevel.ParkingLot()
        self.closed = 0

    def __len__(self) -> int:
        return len(self._members)

    def add(self, ws: WebSocket) -> None:
        fd = ws.connection.sock.fileno()
        self._epoll.register(fd, select.EPOLLIN)
        self._members[fd] = ws
        if ws._messages or ws._closed is not None:
            self._early.append(ws)
        self._added.unpark_all()

    async def serve(self, on_message: Callable[[WebSocket, str | bytes], None],
                    on_close: Callable[[WebSocket, Exception], None] | None = None) -> None:
        members, epoll = self._members, self._epoll
        while True:
            if self._early:
                ready, self._early = [m.connection.sock.fileno() for m in self._early], []
            else:
                if not members:
                    await self._added.park()
                    continue
                await trio.lowlevel.wait_readable(epoll.fileno())
                ready = [fd for fd, _ in epoll.poll(0)]
            for fd in ready:
                ws = members.get(fd)
                if ws is None:
                    continue
                try:
                    if not ws._messages and ws._closed is None:
                        data = ws.connection.sock.recv(RECEIVE_SIZE)
                        if not data:
                            raise ConnectionClosed(None, "end of stream")
                        ws._feed(data)
                    while ws._messages:
                        on_message(ws, ws._messages.popleft())
                    if ws._closed is not None:
                        raise ws._closed
                except BlockingIOError:
                    continue
                except (OSError, ProtocolError, ConnectionClosed) as error:
                    self.discard(ws)
                    self.closed += 1
                    if on_close is not None:
                        on_close(ws, error)

    def discard(self, ws: WebSocket) -> None:
        fd = ws.connection.sock.fileno()
        if self._members.pop(fd, None) is not None:
            self._epoll.unregister(fd)
        ws.close()

    def close(self) -> None:
        for ws in list(self._members.values()):
            ws.close()
        self._members.clear()
        self._epoll.close()
