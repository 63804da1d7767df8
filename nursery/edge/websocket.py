"""The server end of a websocket (RFC 6455) on a non-blocking socket: handshake and frames.

Built for many idle sockets: between messages a socket holds no buffer (the process reads
into one shared buffer and keeps only an incomplete frame), and no task beyond its session's.
Writes go out at once when the kernel has room (``send`` is synchronous, one system call);
only what the kernel refuses waits in the outbox, which the session flushes (``drain``, one
``sendmsg`` for many frames).

No extensions: a client's offer of permessage-deflate is declined (it costs ~100 KB per socket
and CPU per message). Text and binary messages, fragmented or not, up to ``max_message`` bytes
(1009 above). Control frames are answered here: a ping with its pong (skipped while the outbox
is not empty, as the RFC allows: a client that pings without reading cannot grow it), a close
with ours, after which ``receive`` raises ``TransportClosed``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import socket
import struct
from collections import deque

import trio

from nursery.protocol.close_codes import NOT_TEXT, PROTOCOL_VIOLATION, TOO_BIG, ProtocolError, TransportClosed

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CLOSE_GRACE = 1.0  # seconds to wait for the peer's close frame after ours
RECEIVE_BUFFER = 65536
WRITEV_MAX = 64  # frames per sendmsg

OP_CONTINUATION, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA

# Close codes a peer may send (RFC 6455 7.4.1 and the IANA registry); others are a violation.
_VALID_CLOSE = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})

# One receive buffer for the whole process: a read is parsed before the next read anywhere.
_received = bytearray(RECEIVE_BUFFER)


def accept_key(key: str) -> str:
    """``Sec-WebSocket-Accept`` for a client's ``Sec-WebSocket-Key``; ``ValueError`` if the
    key is not 16 bytes in base64."""
    try:
        raw = base64.b64decode(key.encode(), validate=True)
    except (binascii.Error, UnicodeError):
        raise ValueError("Sec-WebSocket-Key is not base64") from None
    if len(raw) != 16:
        raise ValueError("Sec-WebSocket-Key is not 16 bytes")
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


def frame(opcode: int, payload: bytes) -> bytes:
    """One unmasked, unfragmented frame (servers do not mask)."""
    n = len(payload)
    if n < 126:
        return bytes((0x80 | opcode, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x80 | opcode, 126, n) + payload
    return struct.pack("!BBQ", 0x80 | opcode, 127, n) + payload


def close_payload(code: int, reason: str) -> bytes:
    """A close frame's body: the code and at most 123 bytes of reason (whole characters)."""
    data = reason.encode()[:123].decode(errors="ignore").encode()
    return struct.pack("!H", code) + data


def _unmask(data: bytes | bytearray, mask: bytes) -> bytes:
    n = len(data)
    if not n:
        return b""
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data) ^ int.from_bytes(key)).to_bytes(n)


class WebSocket:
    """A ``service.session.Transport`` over a connected, non-blocking socket whose opening
    handshake is done. ``leftover``: bytes the client sent after its handshake request.
    The caller closes the socket when the session is over."""

    __slots__ = ("_sock", "_max_message", "_buffer", "_outbox", "_fragments", "_fragment_op",
                 "_closed")

    def __init__(self, sock: socket.socket, *, max_message: int, leftover: bytes = b"") -> None:
        self._sock = sock
        self._max_message = max_message
        self._buffer: bytearray | None = bytearray(leftover) if leftover else None
        self._outbox: deque[bytes | memoryview] | None = None
        self._fragments: list[bytes] | None = None
        self._fragment_op = 0
        self._closed = False  # a close frame is queued: nothing more is sent

    # -- sending --------------------------------------------------------------------------------

    def send(self, text: str) -> None:
        if self._closed:
            raise TransportClosed()
        self._write(frame(OP_TEXT, text.encode()))

    @property
    def backlog(self) -> int:
        return len(self._outbox) if self._outbox else 0

    async def drain(self) -> None:
        outbox = self._outbox
        while outbox:
            await trio.lowlevel.wait_writable(self._sock)
            chunk = [outbox[i] for i in range(min(len(outbox), WRITEV_MAX))]
            try:
                sent = self._sock.sendmsg(chunk)
            except BlockingIOError:
                continue
            except OSError as exc:
                raise TransportClosed() from exc
            while sent:
                head = outbox[0]
                if sent >= len(head):
                    sent -= len(head)
                    outbox.popleft()
                else:
                    outbox[0] = memoryview(head)[sent:]
                    sent = 0

    def _write(self, data: bytes) -> None:
        if self._outbox:
            self._outbox.append(data)
            return
        try:
            sent = self._sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self._closed = True
            raise TransportClosed() from exc
        if sent < len(data):
            if self._outbox is None:
                self._outbox = deque()
            self._outbox.append(memoryview(data)[sent:])

    # -- receiving ------------------------------------------------------------------------------

    async def receive(self) -> str | bytes:
        while True:
            message = self._next_message()
            if message is not None:
                return message
            await self._read()

    async def _read(self) -> None:
        await trio.lowlevel.wait_readable(self._sock)
        try:
            n = self._sock.recv_into(_received)
        except BlockingIOError:
            return
        except OSError as exc:
            raise TransportClosed() from exc
        if not n:
            raise TransportClosed()
        if self._buffer is None:
            self._buffer = bytearray(memoryview(_received)[:n])
        else:
            self._buffer += memoryview(_received)[:n]

    def _next_message(self) -> str | bytes | None:
        """The next complete message in the buffer, answering control frames on the way."""
        while self._buffer:
            parsed = self._next_frame(self._buffer)
            if parsed is None:
                return None
            fin, opcode, payload = parsed
            if opcode >= OP_CLOSE:
                self._control(opcode, payload)
                continue
            message = self._assemble(fin, opcode, payload)
            if message is not None:
                return message
        return None

    def _next_frame(self, buffer: bytearray) -> tuple[bool, int, bytes] | None:
        """Take one whole frame off ``buffer`` (None: not all there yet)."""
        if len(buffer) < 2:
            return None
        first, second = buffer[0], buffer[1]
        if first & 0x70:
            raise ProtocolError(PROTOCOL_VIOLATION, "reserved bits set: no extension was agreed")
        if not second & 0x80:
            raise ProtocolError(PROTOCOL_VIOLATION, "client frames must be masked")
        fin, opcode, length, start = bool(first & 0x80), first & 0x0F, second & 0x7F, 2
        if opcode >= OP_CLOSE and (not fin or length > 125):
            raise ProtocolError(PROTOCOL_VIOLATION, "control frames are short and whole")
        if length == 126:
            if len(buffer) < 4:
                return None
            (length,), start = struct.unpack_from("!H", buffer, 2), 4
        elif length == 127:
            if len(buffer) < 10:
                return None
            (length,), start = struct.unpack_from("!Q", buffer, 2), 10
        if length > self._max_message:
            raise ProtocolError(TOO_BIG, f"messages are limited to {self._max_message} bytes")
        end = start + 4 + length
        if len(buffer) < end:
            return None
        payload = _unmask(buffer[start + 4:end], bytes(buffer[start:start + 4]))
        del buffer[:end]
        if not buffer:
            self._buffer = None
        return fin, opcode, payload

    def _assemble(self, fin: bool, opcode: int, payload: bytes) -> str | bytes | None:
        if opcode == OP_CONTINUATION:
            if self._fragments is None:
                raise ProtocolError(PROTOCOL_VIOLATION, "a continuation of nothing")
            self._fragments.append(payload)
            if sum(map(len, self._fragments)) > self._max_message:
                raise ProtocolError(TOO_BIG, f"messages are limited to {self._max_message} bytes")
            if not fin:
                return None
            opcode, payload = self._fragment_op, b"".join(self._fragments)
            self._fragments = None
        elif opcode in (OP_TEXT, OP_BINARY):
            if self._fragments is not None:
                raise ProtocolError(PROTOCOL_VIOLATION, "a new message inside a fragmented one")
            if not fin:
                self._fragments, self._fragment_op = [payload], opcode
                return None
        else:
            raise ProtocolError(PROTOCOL_VIOLATION, f"unknown opcode {opcode}")
        if opcode == OP_BINARY:
            return payload
        try:
            return payload.decode()
        except UnicodeDecodeError:
            raise ProtocolError(NOT_TEXT, "text messages must be UTF-8") from None

    def _control(self, opcode: int, payload: bytes) -> None:
        if opcode == OP_PING:
            if not self._closed and not self._outbox:
                self._write(frame(OP_PONG, payload))
        elif opcode == OP_CLOSE:
            if not self._closed:  # the peer started the handshake: answer it
                self._closed = True
                self._drop_queued()
                self._write(frame(OP_CLOSE, _echo(payload)))
            raise TransportClosed()
        elif opcode != OP_PONG:
            raise ProtocolError(PROTOCOL_VIOLATION, f"unknown control opcode {opcode}")

    # -- closing --------------------------------------------------------------------------------

    async def close(self, code: int, reason: str) -> None:
        """Our close frame (frames queued but not started are dropped: the client resumes
        from what it applied), then the peer's, read for at most ``CLOSE_GRACE`` seconds:
        closing a socket with unread data sends a reset, and the peer would lose our frame."""
        if self._closed:
            return
        self._closed = True
        self._drop_queued()
        self._write(frame(OP_CLOSE, close_payload(code, reason)))
        await self.drain()
        with trio.move_on_after(CLOSE_GRACE):
            try:
                while True:
                    while self._next_message() is not None:
                        pass  # what the peer sent after our close frame is dropped
                    await self._read()
            except (TransportClosed, ProtocolError):
                return  # its close frame (answered by ``_control``: no), or it is gone

    def _drop_queued(self) -> None:
        """Forget frames not yet started; a frame half written must still be finished, or the
        peer could not parse what follows."""
        if self._outbox:
            first = self._outbox[0]
            self._outbox = deque([first]) if isinstance(first, memoryview) else None


def _echo(payload: bytes) -> bytes:
    """Our answer to a peer's close frame: its code if valid (RFC 6455 5.5.1)."""
    if len(payload) < 2:
        return b"" if not payload else close_payload(PROTOCOL_VIOLATION, "")
    (code,) = struct.unpack_from("!H", payload)
    valid = code in _VALID_CLOSE or 3000 <= code <= 4999
    try:
        payload[2:].decode()
    except UnicodeDecodeError:
        valid = False
    return struct.pack("!H", code) if valid else close_payload(PROTOCOL_VIOLATION, "")
