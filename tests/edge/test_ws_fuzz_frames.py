"""Properties of the websocket frame parser, with hypothesis, over a real socket pair: the
codec reads each piece the test sends on its own (one ``recv`` per piece), so a split is
exactly where the stream is cut.

- any split of a valid frame stream gives the same messages (and the same pongs);
- any stream at all, valid frames or not, split anywhere, gives the same messages and ends
  the same way as unsplit: more bytes needed, the peer's close, or a close code of the
  protocol (1002, 1007, 1008, 1009), never another exception; and no budget is exceeded on
  the way (the bytes kept, a message's size and frame count).
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field

import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nursery.edge.websocket import PAUSE, FrameLimits, WebSocket
from nursery.protocol.close_codes import ProtocolError, TransportClosed
from nursery.rates import Rate
from tests.edge.echo import client_frame

LIMITS = FrameLimits(max_message=300, max_fragments=6, frame_rate=Rate(10**9, 1.0))
HEADER_MAX = 14  # 2 + 8 (64-bit length) + 4 (mask)
PROTOCOL_CODES = {1002, 1007, 1008, 1009}
FUZZ = settings(max_examples=300, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])


@dataclass
class Outcome:
    messages: list[str | bytes] = field(default_factory=list)
    ending: str | int = "open"  # "open" (waiting for more), "closed" (the peer's close), a code
    pongs: bytes = b""


def parse(pieces: list[bytes]) -> Outcome:
    """What the codec makes of ``pieces``, read one at a time."""
    return trio.run(_parse, pieces)


async def _parse(pieces: list[bytes]) -> Outcome:
    server, client = socket.socketpair()
    server.setblocking(False)
    client.setblocking(False)
    ws = WebSocket(server, limits=LIMITS)
    outcome = Outcome()
    try:
        for piece in pieces:
            if not piece:
                continue
            client.sendall(piece)
            await ws._read()  # exactly this piece: nothing else was sent
            while True:
                message = ws._next_message()
                kept = len(ws._buffer or b"")
                assert kept <= LIMITS.max_message + HEADER_MAX + len(piece), kept
                partial = ws._message
                if partial is not None:
                    assert partial.frames <= LIMITS.max_fragments
                    assert partial.size <= LIMITS.max_message
                if message is None:
                    break
                if message is PAUSE:
                    ws._unyielded = 0
                    continue
                assert len(message.encode() if isinstance(message, str) else message) \
                    <= LIMITS.max_message
                outcome.messages.append(message)
    except ProtocolError as error:
        assert error.code in PROTOCOL_CODES, error
        outcome.ending = error.code
    except TransportClosed:
        outcome.ending = "closed"
    finally:
        try:
            outcome.pongs = client.recv(1 << 20)
        except BlockingIOError:
            pass
        server.close()
        client.close()
    return outcome


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(edges, edges[1:], strict=False)]


# -- valid streams ------------------------------------------------------------------------------

texts = st.text(max_size=40)
blobs = st.binary(max_size=60)


@st.composite
def valid_streams(draw: st.DrawFn) -> tuple[bytes, list[str | bytes], list[bytes]]:
    """Frames of whole messages (some fragmented, pings between fragments) and what they are."""
    stream, messages, pings = b"", [], []
    for _ in range(draw(st.integers(0, 5))):
        message: str | bytes = draw(texts | blobs)
        data = message.encode() if isinstance(message, str) else message
        cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=LIMITS.max_fragments - 1)))
        parts = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        opcode = 0x1 if isinstance(message, str) else 0x2
        for i, part in enumerate(parts):
            mask = draw(st.binary(min_size=4, max_size=4))
            stream += client_frame(opcode if i == 0 else 0x0, part, fin=i == len(parts) - 1,
                                   mask=mask)
            if draw(st.integers(0, 4)) == 0:
                ping = draw(st.binary(max_size=125))
                pings.append(ping)
                stream += client_frame(0x9, ping)
        messages.append(message)
    return stream, messages, pings


def pong_stream(pings: list[bytes]) -> bytes:
    return b"".join(bytes((0x8A, len(p))) + p for p in pings)


@FUZZ
@given(valid_streams(), st.lists(st.integers(min_value=0), max_size=30))
def test_any_split_of_a_valid_stream_gives_the_same_messages(
    valid: tuple[bytes, list[str | bytes], list[bytes]], cuts: list[int]
) -> None:
    stream, messages, pings = valid
    outcome = parse(split(stream, cuts))
    assert outcome.messages == messages
    assert outcome.ending == "open"
    assert outcome.pongs == pong_stream(pings)


# -- any stream ---------------------------------------------------------------------------------

@st.composite
def any_frame(draw: st.DrawFn) -> bytes:
    """A frame as a hostile client may write it: any bits, any length form, any payload
    (UTF-8 or not), sometimes cut short, sometimes plain noise."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=20))
    opcode = draw(st.sampled_from([0x0, 0x1, 0x2, 0x8, 0x9, 0xA]) | st.integers(0, 15))
    payload = draw(st.binary(max_size=80) | texts.map(str.encode)
                   | st.integers(0, 400).map(lambda n: b"a" * n))
    if opcode == 0x8 and draw(st.booleans()):
        payload = struct.pack("!H", draw(st.integers(0, 65535))) + payload[:40]
    n = len(payload)
    form = draw(st.sampled_from([None, 126, 127])) if n < 65536 else None
    data = client_frame(opcode, payload, fin=draw(st.integers(0, 3)) > 0,
                        rsv=draw(st.sampled_from([0, 0, 0, 1, 2, 4])),
                        mask=draw(st.sampled_from([b"\x01\x02\x03\x04", b"\0\0\0\0", None])),
                        length_form=form)
    if draw(st.integers(0, 9)) == 0:
        data = data[:draw(st.integers(0, len(data)))]
    return data


@FUZZ
@given(st.lists(any_frame(), max_size=12).map(b"".join), st.lists(st.integers(min_value=0), max_size=20))
def test_any_stream_ends_the_same_way_split_or_not(stream: bytes, cuts: list[int]) -> None:
    whole = parse([stream])
    pieces = parse(split(stream, cuts))
    assert pieces.messages == whole.messages
    assert pieces.ending == whole.ending


@FUZZ
@given(st.binary(max_size=2000))
def test_random_bytes_never_crash(stream: bytes) -> None:
    parse(split(stream, [7, 100, 900]))
