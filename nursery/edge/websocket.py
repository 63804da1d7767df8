"""The server end of a websocket (RFC 6455) on a non-blocking socket: handshake and frames.

Built for many idle sockets: between messages a socket holds no buffer (the process reads
into one shared buffer and keeps only an incomplete frame), and no task beyond its session's.
Writes go out at once when the kernel has room (``send`` is synchronous, one system call);
only what the kernel refuses waits in the outbox, which the session flushes (``drain``, one
``sendmsg`` for many frames).

No extensions: a client's offer of permessage-deflate is declined (it costs ~100 KB per socket
and CPU per message). Text and binary messages, fragmented or not. Control frames are answered
here: a ping with its pong (skipped while the outbox is not empty, as the RFC allows: a client
that pings without reading cannot grow it), a close with ours, after which ``receive`` raises
``TransportClosed``.

Budgets (``FrameLimits``), checked as the bytes arrive, each failing the connection at once:

- bytes per message, ``max_message``: 1009, as soon as a frame's header announces more;
- frames per message, ``max_fragments`` (empty ones too): 1009;
- frames per second, ``frame_rate``, every frame counted (data, continuation, ping, pong,
  close): 1008;
- one incomplete frame is kept, at most ``max_message`` bytes of payload; a fragmented message
  is kept as its pieces (joined once, at its end);
- at most ``FRAMES_PER_CHECKPOINT`` frames are parsed before the task lets others run, so a
  read full of tiny frames cannot hold the instance.

Stricter than the RFC's MAY, as wsproto is: a length not in its shortest encoding, or a 64-bit
length with its top bit set, is 1002 (RFC 6455 5.2); a text message's UTF-8 is checked as its
bytes arrive, so an invalid sequence fails the connection (1007) without waiting for the
rest of the frame or message (Autobahn 6.4.x "fail fast").
"""

from __future__ import annotations

import codecs
import enum
import socket
import struct
import time
from collections import deque
from typing import Any

import trio

from nursery.edge.frames import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    close_answer,
    frame,
    unmask,
)
from nursery.edge.frames import FrameLimits as FrameLimits
from nursery.edge.frames import accept_key as accept_key
from nursery.edge.frames import close_payload as close_payload
from nursery.protocol.close_codes import (
    BAD_MESSAGE,
    NOT_TEXT,
    PROTOCOL_VIOLATION,
    TOO_BIG,
    ProtocolError,
    TransportClosed,
)

CLOSE_GRACE = 1.0  # seconds to wait for the peer's close frame after ours
RECEIVE_BUFFER = 65536
WRITEV_MAX = 64  # frames per sendmsg
FRAMES_PER_CHECKPOINT = 128  # frames parsed before the task yields (well under 1 ms of work)

# One receive buffer for the whole process: a read is parsed before the next read anywhere.
_received = bytearray(RECEIVE_BUFFER)

_utf8_decoder = codecs.getincrementaldecoder("utf-8")


class _Pause(enum.Enum):
    """``_next_message``'s answer when it parsed its batch of frames: let others run."""

    PAUSE = 0


PAUSE = _Pause.PAUSE


class _Message:
    """A message being received: its pieces (text decoded as it comes: ``decoder`` is None
    for a binary message), and how much of the frame at the head of the buffer was taken."""

    __slots__ = ("pieces", "size", "frames", "decoder", "checked")

    def __init__(self, opcode: int) -> None:
        self.pieces: list[Any] = []  # str for a text message, bytes for a binary one
        self.size = 0  # payload bytes of the frames received whole
        self.frames = 0  # frames received whole
        self.decoder = _utf8_decoder() if opcode == OP_TEXT else None
        self.checked = 0  # payload bytes of the incomplete head frame already decoded


class WebSocket:
    """A ``service.session.Transport`` over a connected, non-blocking socket whose opening
    handshake is done. ``leftover``: bytes the client sent after its handshake request.
    The caller closes the socket when the session is over."""

    __slots__ = ("_sock", "_limits", "_buffer", "_outbox", "_message", "_closed", "_tat",
                 "_unyielded")

    def __init__(
        self, sock: socket.socket, *, limits: FrameLimits, leftover: bytes = b""
    ) -> None:
        self._sock = sock
        self._limits = limits
        self._buffer: bytearray | None = bytearray(leftover) if leftover else None
        self._outbox: deque[bytes | memoryview] | None = None
        self._message: _Message | None = None  # a fragmented (or half-read text) message
        self._closed = False  # a close frame is queued: nothing more is sent
        self._tat = 0.0  # GCRA state of the frame rate (theoretical arrival time)
        self._unyielded = 0  # frames parsed since this task last let others run

    # -- sending --------------------------------------------------------------------------------

    def send(self, text: str) -> None:
        if self._closed:
            raise TransportClosed()
        self._write(frame(OP_TEXT, text.encode()))

    def send_binary(self, data: bytes) -> None:
        if self._closed:
            raise TransportClosed()
        self._write(frame(OP_BINARY, data))

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
            if message is None:
                await self._read()
            elif message is PAUSE:
                await trio.lowlevel.checkpoint()
                self._unyielded = 0
            else:
                return message

    async def _read(self) -> None:
        await trio.lowlevel.wait_readable(self._sock)
        self._unyielded = 0
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

    def _next_message(self) -> str | bytes | _Pause | None:
        """The next complete message in the buffer, answering control frames on the way;
        None when more bytes are needed, ``PAUSE`` after a batch of frames.

        Frames are parsed at an offset and the buffer is cut once, at the end."""
        buffer = self._buffer
        if buffer is None:
            return None
        pos, result = 0, None
        # The frame rate, GCRA: a burst of ``count`` frames, then ``count`` per ``per``.
        # (time.monotonic: a third of trio.current_time's cost, and the budget is real time.)
        limits, now = self._limits, time.monotonic()
        interval, burst = limits.frame_interval, limits.frame_burst
        try:
            while result is None:
                if self._unyielded >= FRAMES_PER_CHECKPOINT:
                    return PAUSE
                parsed = self._next_frame(buffer, pos)
                if parsed is None:
                    return None
                pos, fin, opcode, payload = parsed
                self._unyielded += 1
                tat = max(self._tat, now) + interval
                if tat - now > burst:
                    raise ProtocolError(
                        BAD_MESSAGE, f"more than {limits.frame_rate} websocket frames")
                self._tat = tat
                if opcode >= OP_CLOSE:
                    self._control(opcode, payload)
                else:
                    result = self._assemble(fin, opcode, payload)
            return result
        finally:
            if pos:
                del buffer[:pos]
                if not buffer:
                    self._buffer = None

    def _next_frame(
        self, buffer: bytearray, pos: int
    ) -> tuple[int, bool, int, bytes] | None:
        """The frame at ``pos`` if it is all there: (its end, fin, opcode, payload unmasked).
        Everything its header says is checked as soon as the header is in."""
        available = len(buffer) - pos
        if available < 2:
            return None
        first, second = buffer[pos], buffer[pos + 1]
        if first & 0x70:
            raise ProtocolError(PROTOCOL_VIOLATION, "reserved bits set: no extension was agreed")
        if not second & 0x80:
            raise ProtocolError(PROTOCOL_VIOLATION, "client frames must be masked")
        fin, opcode, length, start = bool(first & 0x80), first & 0x0F, second & 0x7F, pos + 2
        if opcode >= OP_CLOSE:
            if opcode > OP_PONG:
                raise ProtocolError(PROTOCOL_VIOLATION, f"unknown control opcode {opcode}")
            if not fin or length > 125:
                raise ProtocolError(PROTOCOL_VIOLATION, "control frames are short and whole")
        elif self._message is not None or not OP_TEXT <= opcode <= OP_BINARY:  # not the usual
            self._check_data_frame(opcode)
        if length == 126:
            if available < 4:
                return None
            length, start = (buffer[pos + 2] << 8) | buffer[pos + 3], pos + 4
            if length < 126:
                raise ProtocolError(PROTOCOL_VIOLATION, "a length not in its shortest form")
        elif length == 127:
            if available < 10:
                return None
            (length,), start = struct.unpack_from("!Q", buffer, pos + 2), pos + 10
            if length >> 63:
                raise ProtocolError(PROTOCOL_VIOLATION, "a 64-bit length with its top bit set")
            if length < 65536:
                raise ProtocolError(PROTOCOL_VIOLATION, "a length not in its shortest form")
        message = self._message
        if opcode < OP_CLOSE:
            size = length + (message.size if message is not None and opcode == 0 else 0)
            if size > self._limits.max_message:
                raise ProtocolError(
                    TOO_BIG, f"messages are limited to {self._limits.max_message} bytes")
        end = start + 4 + length
        if len(buffer) < end:
            if opcode != OP_BINARY and opcode < OP_CLOSE and length:
                self._check_text_so_far(buffer, start, opcode)
            return None
        mask = bytes(buffer[start:start + 4])
        checked = message.checked if message is not None and opcode < OP_CLOSE else 0
        payload = unmask(buffer[start + 4 + checked:end], mask, checked)
        return end, fin, opcode, payload

    def _check_data_frame(self, opcode: int) -> None:
        message = self._message
        if opcode == OP_CONTINUATION:
            if message is None or not message.frames:
                raise ProtocolError(PROTOCOL_VIOLATION, "a continuation of nothing")
            if message.frames >= self._limits.max_fragments:
                raise ProtocolError(
                    TOO_BIG, f"messages are limited to {self._limits.max_fragments} frames")
        elif opcode in (OP_TEXT, OP_BINARY):
            if message is not None and message.frames:
                raise ProtocolError(PROTOCOL_VIOLATION, "a new message inside a fragmented one")
        else:
            raise ProtocolError(PROTOCOL_VIOLATION, f"unknown opcode {opcode}")

    def _check_text_so_far(self, buffer: bytearray, start: int, opcode: int) -> None:
        """Decode what is in of an incomplete text frame, so that invalid UTF-8 fails now."""
        message = self._message
        if message is None:
            if opcode != OP_TEXT:
                return
            message = self._message = _Message(OP_TEXT)
        if message.decoder is None:
            return  # a binary message's continuation
        begin = start + 4 + message.checked
        if begin >= len(buffer):
            return
        mask = bytes(buffer[start:start + 4])
        data = unmask(memoryview(buffer)[begin:], mask, message.checked)
        message.checked += len(data)
        self._decode(message, data, final=False)

    def _decode(self, message: _Message, data: bytes, *, final: bool) -> None:
        assert message.decoder is not None
        try:
            text = message.decoder.decode(data, final)
        except UnicodeDecodeError:
            raise ProtocolError(NOT_TEXT, "text messages must be UTF-8") from None
        if text:
            message.pieces.append(text)

    def _assemble(self, fin: bool, opcode: int, payload: bytes) -> str | bytes | None:
        """Add a whole data frame (``payload``: what ``_check_text_so_far`` left of it) to the
        message; the message when it is complete."""
        message = self._message
        if message is None:
            if fin:  # the usual case: a message in one frame
                if opcode == OP_BINARY:
                    return payload
                try:
                    return payload.decode()
                except UnicodeDecodeError:
                    raise ProtocolError(NOT_TEXT, "text messages must be UTF-8") from None
            message = self._message = _Message(opcode)
        message.frames += 1
        message.size += message.checked + len(payload)
        message.checked = 0
        if message.decoder is not None:
            self._decode(message, payload, final=fin)
        elif payload:
            message.pieces.append(payload)
        if not fin:
            return None
        self._message = None
        if message.decoder is not None:
            return "".join(message.pieces)
        return b"".join(message.pieces)

    def _control(self, opcode: int, payload: bytes) -> None:
        if opcode == OP_PING:
            if not self._closed and not self._outbox:
                self._write(frame(OP_PONG, payload))
        elif opcode == OP_CLOSE:
            if not self._closed:  # the peer started the handshake: answer it
                self._closed = True
                self._drop_queued()
                self._write(frame(OP_CLOSE, close_answer(payload)))
            raise TransportClosed()

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
                    # What the peer sent after our close frame is dropped, within the budgets.
                    if self._next_message() is None:
                        await self._read()
                    else:
                        await trio.lowlevel.checkpoint()
                        self._unyielded = 0
            except TransportClosed:
                return  # its close frame (answered by ``_control``: no), or it is gone
            except ProtocolError:
                pass
            # The stream does not parse (we are closing because of it): no close frame can be
            # found in it. Our side ends (FIN after our close frame) and what the peer still
            # sends is read and dropped until it closes too: closing with unread bytes would
            # reset the connection, and the peer could lose our close frame.
            self._buffer = self._message = None
            try:
                self._sock.shutdown(socket.SHUT_WR)
                while True:
                    await self._read()
                    self._buffer = None
            except (TransportClosed, OSError):
                return

    def _drop_queued(self) -> None:
        """Forget frames not yet started; a frame half written must still be finished, or the
        peer could not parse what follows."""
        if self._outbox:
            first = self._outbox[0]
            self._outbox = deque([first]) if isinstance(first, memoryview) else None
