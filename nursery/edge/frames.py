"""RFC 6455's wire format, without I/O: the handshake's accept key, the frames a server
writes, the close frame's body and the answer to a peer's, unmasking, and ``FrameLimits`` (what
one client may cost; ``websocket`` enforces them as the bytes arrive)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from dataclasses import dataclass, field

from nursery.protocol.close_codes import NOT_TEXT, PROTOCOL_VIOLATION
from nursery.rates import Rate

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONTINUATION, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA

# Close codes a peer may send (RFC 6455 7.4.1 and the IANA registry); others are a violation.
_VALID_CLOSE = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})


@dataclass(frozen=True, slots=True)
class FrameLimits:
    """What one websocket's client may cost (the budgets in ``edge.websocket``'s docstring)."""

    max_message: int = 64 * 1024  # bytes of one message, all its frames together
    max_fragments: int = 1024  # frames of one message: 64 KiB in 64-byte pieces
    frame_rate: Rate = Rate(2000, 1.0)  # frames of any kind, bursts included
    # The frame rate's GCRA, worked out once: each frame's cost, and how far ahead of now
    # the frames may run (``per``; a millionth more: a float's rounding is not a frame too many).
    frame_interval: float = field(init=False)
    frame_burst: float = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "frame_interval", self.frame_rate.interval)
        object.__setattr__(self, "frame_burst", self.frame_rate.per * 1.000001)


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


def unmask(data: bytes | bytearray | memoryview, mask: bytes, offset: int = 0) -> bytes:
    """``data`` XOR the mask, ``data`` starting ``offset`` bytes into the payload."""
    n = len(data)
    if not n:
        return b""
    if offset % 4:
        mask = mask[offset % 4:] + mask[:offset % 4]
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data) ^ int.from_bytes(key)).to_bytes(n)


def close_answer(payload: bytes) -> bytes:
    """Our answer to a peer's close frame (RFC 6455 5.5.1): its code if valid; 1002 for a
    code not allowed or a 1-byte body, 1007 for a reason that is not UTF-8 (as wsproto)."""
    if len(payload) < 2:
        return b"" if not payload else close_payload(PROTOCOL_VIOLATION, "")
    (code,) = struct.unpack_from("!H", payload)
    if not (code in _VALID_CLOSE or 3000 <= code <= 4999):
        return close_payload(PROTOCOL_VIOLATION, "")
    try:
        payload[2:].decode()
    except UnicodeDecodeError:
        return close_payload(NOT_TEXT, "")
    return struct.pack("!H", code)
