"""A byte-exact client for attacks (``attacks.py``): blocking sockets, nothing normalised.

What it sends is exactly the bytes given; what it reads back is reported as seen: the
status lines of HTTP answers, a websocket's frames and close code, and whether and when the
server closed the connection. Every read has a deadline.
"""

from __future__ import annotations

import base64
import os
import select
import socket
import struct
import time
from dataclasses import dataclass, field

READ = 65536
MASK = b"\x37\xfa\x21\x3d"  # any mask will do; a fixed one keeps the bytes reproducible

Address = tuple[str, int]


def connect(address: Address, timeout: float = 10.0) -> socket.socket:
    sock = socket.create_connection(address, timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def send(sock: socket.socket, data: bytes) -> str | None:
    """Send all of ``data``; the error's name if the server refused the rest (it closed)."""
    try:
        sock.sendall(data)
    except OSError as exc:
        return type(exc).__name__
    return None


def receive(sock: socket.socket, until: float) -> bytes | None:
    """Bytes as soon as some arrive before the monotonic deadline ``until``; b"" once the
    server closed (or reset) the connection; None at the deadline."""
    left = until - time.monotonic()
    if left <= 0 or not select.select([sock], [], [], left)[0]:
        return None
    try:
        return sock.recv(READ)
    except OSError:  # a reset is a close too
        return b""


@dataclass
class Answers:
    """What an HTTP client got back: every answer's status line and headers, in order."""

    statuses: list[str] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    closed: bool = False
    seconds: float = 0.0  # until the server closed, or until we stopped waiting
    send_error: str | None = None

    def to_json(self, started: float | None = None) -> dict[str, object]:
        return {
            "statuses": self.statuses[:20] + ([f"... {len(self.statuses)} in all"] if len(self.statuses) > 20 else []),
            "answers": len(self.statuses),
            "closed_by_server": self.closed,
            "seconds": round(self.seconds, 3),
            **({"send_error": self.send_error} if self.send_error else {}),
        }


class ResponseReader:
    """Splits a stream of HTTP/1.1 responses (Content-Length framed, as the edge writes them)."""

    def __init__(self) -> None:
        self.buffer = b""
        self.answers = Answers()

    def feed(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = self.buffer[:end].decode("latin-1").split("\r\n")
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            status = int(lines[0].split()[1]) if len(lines[0].split()) > 1 else 0
            length = 0 if status in (101, 204, 304) or 100 <= status < 200 else int(headers.get("content-length", 0))
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length:]
            self.answers.statuses.append(lines[0])
            self.answers.headers.append(headers)


def read_answers(sock: socket.socket, started: float, wait: float, *, expect: int | None = None,
                 reader: ResponseReader | None = None) -> Answers:
    """Read answers until the server closes, ``expect`` answers are in, or ``wait`` seconds
    pass without the server closing."""
    reader = reader or ResponseReader()
    until = time.monotonic() + wait
    while expect is None or len(reader.answers.statuses) < expect:
        data = receive(sock, until)
        if data is None:
            break
        if not data:
            reader.answers.closed = True
            break
        reader.feed(data)
    reader.answers.seconds = time.monotonic() - started
    return reader.answers


def request(address: Address, data: bytes, wait: float = 3.0, expect: int | None = None) -> Answers:
    """One connection: send ``data``, read what comes back until it closes, ``expect``
    answers are in, or ``wait`` seconds pass."""
    started = time.monotonic()
    with connect(address) as sock:
        error = send(sock, data)
        answers = read_answers(sock, started, wait, expect=expect)
        answers.send_error = error
        return answers


# -- websockets ----------------------------------------------------------------------------------

def handshake_bytes(host: str = "x", path: str = "/ws", version: str = "1.1",
                    key: str | None = None) -> bytes:
    key = key or base64.b64encode(os.urandom(16)).decode()
    return (f"GET {path} HTTP/{version}\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode("latin-1")


def open_websocket(address: Address, path: str = "/ws") -> tuple[socket.socket, bytes]:
    """A socket past its opening handshake, and the bytes read after the 101."""
    sock = connect(address)
    sock.sendall(handshake_bytes(path=path))
    buffer, until = b"", time.monotonic() + 10
    while b"\r\n\r\n" not in buffer:
        data = receive(sock, until)
        if not data:
            sock.close()
            raise ConnectionError(f"no handshake answer: {buffer[:80]!r}")
        buffer += data
    head, _, rest = buffer.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        sock.close()
        raise ConnectionError(f"handshake refused: {head.split(b'\r\n')[0]!r}")
    return sock, rest


def masked(opcode: int, payload: bytes = b"", *, fin: bool = True, mask: bytes = MASK) -> bytes:
    """One client frame, its length in the shortest encoding."""
    n = len(payload)
    first = (0x80 if fin else 0) | opcode
    if n < 126:
        head = bytes((first, 0x80 | n))
    elif n < 65536:
        head = struct.pack("!BBH", first, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", first, 0x80 | 127, n)
    return head + mask + apply_mask(payload, mask)


def apply_mask(payload: bytes, mask: bytes = MASK) -> bytes:
    return bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


@dataclass
class WebSocketOutcome:
    """What a websocket client got back until the server closed (or we stopped waiting)."""

    pongs: int = 0
    messages: list[str] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str = ""
    closed: bool = False  # the server closed the TCP connection
    seconds: float = 0.0
    send_error: str | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "pongs": self.pongs,
            "messages": [m[:120] for m in self.messages[:3]],
            "close_code": self.close_code,
            "close_reason": self.close_reason,
            "closed_by_server": self.closed,
            "seconds": round(self.seconds, 3),
            **({"send_error": self.send_error} if self.send_error else {}),
        }


class FrameReader:
    """The server's (unmasked) frames off a socket, counted into a ``WebSocketOutcome``."""

    def __init__(self, sock: socket.socket, leftover: bytes = b"") -> None:
        self.sock = sock
        self.buffer = leftover
        self.outcome = WebSocketOutcome()

    def read_until_closed(self, started: float, wait: float) -> WebSocketOutcome:
        """Until the server closes the TCP connection or ``wait`` seconds pass. A close frame
        is answered with ours, as a client should."""
        until = time.monotonic() + wait
        while True:
            self._parse()
            data = receive(self.sock, until)
            if data is None:
                break
            if not data:
                self.outcome.closed = True
                break
            self.buffer += data
        self._parse()
        self.outcome.seconds = time.monotonic() - started
        return self.outcome

    def _parse(self) -> None:
        while len(self.buffer) >= 2:
            opcode, length, start = self.buffer[0] & 0x0F, self.buffer[1] & 0x7F, 2
            if length == 126:
                if len(self.buffer) < 4:
                    return
                (length,), start = struct.unpack_from("!H", self.buffer, 2), 4
            elif length == 127:
                if len(self.buffer) < 10:
                    return
                (length,), start = struct.unpack_from("!Q", self.buffer, 2), 10
            if len(self.buffer) < start + length:
                return
            payload, self.buffer = self.buffer[start:start + length], self.buffer[start + length:]
            if opcode == 0xA:
                self.outcome.pongs += 1
            elif opcode == 0x8 and self.outcome.close_code is None:
                if len(payload) >= 2:
                    self.outcome.close_code = struct.unpack_from("!H", payload)[0]
                    self.outcome.close_reason = payload[2:].decode(errors="replace")
                else:
                    self.outcome.close_code = 1005  # "no status code present"
                send(self.sock, masked(0x8, payload[:2]))
            elif opcode in (0x1, 0x2):
                self.outcome.messages.append(payload.decode(errors="replace"))
