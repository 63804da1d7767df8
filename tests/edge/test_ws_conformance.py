"""The Autobahn TestSuite's cases, sections 1-7 and 9 (all that apply without compression), as
exact bytes against the edge's listener and codec serving an echo endpoint (``echo.py``).

Each case sends what the suite's fuzzing client sends and checks what it checks: the frames
the server answers (echoes, pongs, nothing more) and how it closes (the code, or a clean
close after ours). "Chopped" cases send their bytes in pieces with a pause between, so the
server reads them apart; "fail fast" cases must be closed before the last piece is sent
(Autobahn's STRICT, where waiting for the rest is NON-STRICT).

Section 9 (big messages) is scaled to our 64 KiB default message limit: the suite's 64 KiB to
16 MiB messages become 64 KiB ones, in the same fragment and chop sizes up to 64 KiB (the full
sizes run in the real suite, ``test_autobahn.py``, with the limits raised). Our own limits
(message bytes ±1, fragments per message, frames per second, length encodings) close the
section.
"""

from __future__ import annotations

import struct
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest
import trio

from nursery.edge.websocket import FrameLimits
from nursery.rates import Rate
from tests.edge.echo import RawClient, client_frame, echo_server, raw_client

TEXT, BINARY, CONT, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA
NO_CODE = 1005  # a close frame without a body
CLEAN = 1000
LIMIT = FrameLimits().max_message
f = client_frame


@dataclass
class Case:
    name: str
    send: list[bytes]  # each piece is sent on its own (with a pause between if ``chopped``)
    expect: list[tuple[int, bytes]] = field(default_factory=list)  # frames answered, in order
    close: int | set[int] | None = None  # the server's close code; None: it stays open
    chopped: bool = False
    fail_fast: bool = False  # the close comes before the last piece is sent


def bytewise(data: bytes) -> list[bytes]:
    return [data[i:i + 1] for i in range(len(data))]


def chops(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


def close_body(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


def cases() -> list[Case]:
    c: list[Case] = []
    # -- 1: framing: text and binary of every length encoding's edges --------------------------
    for i, n in enumerate([0, 125, 126, 127, 128, 65535, 65536], start=1):
        c.append(Case(f"1.1.{i} text {n}", [f(TEXT, b"*" * n)], [(TEXT, b"*" * n)]))
        c.append(Case(f"1.2.{i} binary {n}", [f(BINARY, b"\xfe" * n)], [(BINARY, b"\xfe" * n)]))
    c.append(Case("1.1.8 text 65536 in chops of 997", chops(f(TEXT, b"*" * 65536), 997),
                  [(TEXT, b"*" * 65536)], chopped=True))
    c.append(Case("1.2.8 binary 65536 in chops of 997", chops(f(BINARY, b"\xfe" * 65536), 997),
                  [(BINARY, b"\xfe" * 65536)], chopped=True))
    # -- 2: pings and pongs ---------------------------------------------------------------------
    binary = b"\x00\xff\xfe\xfd\xfc\xfb\x00\xff"
    c += [
        Case("2.1 ping", [f(PING)], [(PONG, b"")]),
        Case("2.2 ping with text", [f(PING, b"Hello, world!")], [(PONG, b"Hello, world!")]),
        Case("2.3 ping with binary", [f(PING, binary)], [(PONG, binary)]),
        Case("2.4 ping of 125", [f(PING, b"*" * 125)], [(PONG, b"*" * 125)]),
        Case("2.5 ping of 126", [f(PING, b"*" * 126)], close=1002),
        Case("2.6 ping of 125 bytewise", bytewise(f(PING, b"*" * 125)), [(PONG, b"*" * 125)],
             chopped=True),
        Case("2.7 unsolicited pong", [f(PONG)]),
        Case("2.8 unsolicited pong with payload", [f(PONG, b"unsolicited pong payload")]),
        Case("2.9 pong then ping", [f(PONG, b"unsolicited"), f(PING, b"ping payload")],
             [(PONG, b"ping payload")]),
        Case("2.10 ten pings", [f(PING, b"payload-%d" % i) for i in range(10)],
             [(PONG, b"payload-%d" % i) for i in range(10)]),
        Case("2.11 ten pings bytewise", [b for i in range(10) for b in bytewise(f(PING, b"p%d" % i))],
             [(PONG, b"p%d" % i) for i in range(10)], chopped=True),
    ]
    # -- 3: reserved bits -----------------------------------------------------------------------
    small = f(TEXT, b"small")
    c += [
        Case("3.1 RSV1 on text", [f(TEXT, b"Hello, world!", rsv=1)], close=1002),
        Case("3.2 RSV2 after a text, then a ping", [small, f(TEXT, b"small", rsv=2), f(PING)],
             [(TEXT, b"small")], close=1002),
        Case("3.3 RSV3, framewise", [small, f(TEXT, b"small", rsv=3), f(PING)],
             [(TEXT, b"small")], close=1002, chopped=True),
        Case("3.4 RSV4, bytewise", bytewise(small + f(TEXT, b"small", rsv=4) + f(PING)),
             [(TEXT, b"small")], close=1002, chopped=True),
        Case("3.5 RSV5 on binary", [f(BINARY, binary, rsv=5)], close=1002),
        Case("3.6 RSV6 on a ping", [f(PING, b"Hello, world!", rsv=6)], close=1002),
        Case("3.7 RSV7 on a close", [f(CLOSE, close_body(1000), rsv=7)], close=1002),
    ]
    # -- 4: opcodes -----------------------------------------------------------------------------
    for section, opcodes in (("4.1", (3, 4, 5, 6, 7)), ("4.2", (11, 12, 13, 14, 15))):
        first, second, *rest = opcodes
        c.append(Case(f"{section}.1 opcode {first}", [f(first)], close=1002))
        c.append(Case(f"{section}.2 opcode {second} with payload",
                      [f(second, b"reserved opcode payload")], close=1002))
        for i, op in enumerate(rest, start=3):
            payload = b"" if i == 3 else b"reserved opcode payload"
            c.append(Case(f"{section}.{i} opcode {op} between a text and a ping",
                          [small, f(op, payload), f(PING)], [(TEXT, b"small")], close=1002))
    # -- 5: fragmentation -----------------------------------------------------------------------
    frag1, frag2 = f(TEXT, b"fragment1", fin=False), f(CONT, b"fragment2")
    joined = [(TEXT, b"fragment1fragment2")]
    ping = f(PING, b"ping payload")
    c += [
        Case("5.1 fragmented ping", [f(PING, b"fragment1", fin=False), frag2], close=1002),
        Case("5.2 fragmented pong", [f(PONG, b"fragment1", fin=False), frag2], close=1002),
        Case("5.3 text in 2 fragments", [frag1, frag2], joined),
        Case("5.4 text in 2 fragments, framewise", [frag1, frag2], joined, chopped=True),
        Case("5.5 text in 2 fragments, bytewise", bytewise(frag1 + frag2), joined, chopped=True),
        Case("5.6 a ping between fragments", [frag1, ping, frag2],
             [(PONG, b"ping payload"), *joined]),
        Case("5.7 a ping between fragments, framewise", [frag1, ping, frag2],
             [(PONG, b"ping payload"), *joined], chopped=True),
        Case("5.8 a ping between fragments, bytewise", bytewise(frag1 + ping + frag2),
             [(PONG, b"ping payload"), *joined], chopped=True),
    ]
    lone = f(CONT, b"non-continuation payload")
    hello = f(TEXT, b"Hello, world!")
    c += [
        Case("5.9 a continuation with nothing to continue", [lone, hello], close=1002),
        Case("5.10 same, framewise", [lone, hello], close=1002, chopped=True),
        Case("5.11 same, bytewise", bytewise(lone + hello), close=1002, chopped=True),
    ]
    lone = f(CONT, b"non-continuation payload", fin=False)
    c += [
        Case("5.12 an unfinished continuation with nothing to continue", [lone, hello], close=1002),
        Case("5.13 same, framewise", [lone, hello], close=1002, chopped=True),
        Case("5.14 same, bytewise", bytewise(lone + hello), close=1002, chopped=True),
    ]
    pieces = [f(TEXT, b"fragment1", fin=False), f(CONT, b"fragment2"),
              f(CONT, b"fragment3", fin=False), f(TEXT, b"fragment4")]
    c.append(Case("5.15 a continuation after a finished message", pieces, joined, close=1002))
    pieces = [f(CONT, b"fragment1", fin=False), f(CONT, b"fragment2"),
              f(TEXT, b"fragment3", fin=False), f(CONT, b"fragment4")] * 2
    c.append(Case("5.16 continuations first", pieces, close=1002))
    pieces = [f(CONT, b"fragment1"), f(CONT, b"fragment2"),
              f(TEXT, b"fragment3", fin=False), f(CONT, b"fragment4")] * 2
    c.append(Case("5.17 finished continuations first", pieces, close=1002))
    c.append(Case("5.18 a text inside a text", [frag1, f(TEXT, b"fragment2")], close=1002))
    five = [f(TEXT, b"fragment1", fin=False), f(CONT, b"fragment2", fin=False),
            f(PING, b"pongme 1!"), f(CONT, b"fragment3", fin=False), f(CONT, b"fragment4", fin=False),
            f(PING, b"pongme 2!"), f(CONT, b"fragment5")]
    answer = [(PONG, b"pongme 1!"), (PONG, b"pongme 2!"),
              (TEXT, b"fragment1fragment2fragment3fragment4fragment5")]
    c.append(Case("5.19 five fragments and two pings, framewise", five, answer, chopped=True))
    c.append(Case("5.20 same, bytewise", bytewise(b"".join(five)), answer, chopped=True))
    # -- 6: UTF-8 -------------------------------------------------------------------------------
    c += [
        Case("6.1.1 an empty text", [f(TEXT)], [(TEXT, b"")]),
        Case("6.1.2 an empty text in 3 empty fragments",
             [f(TEXT, fin=False), f(CONT, fin=False), f(CONT)], [(TEXT, b"")]),
        Case("6.1.3 empty fragments around a payload",
             [f(TEXT, fin=False), f(CONT, b"middle frame payload", fin=False), f(CONT)],
             [(TEXT, b"middle frame payload")]),
    ]
    hello_utf8 = "Hello-µ@ßöäüàá-UTF-8!!".encode()
    kosme = "κόσμε".encode()
    c += [
        Case("6.2.1 valid UTF-8 in one frame", [f(TEXT, hello_utf8)], [(TEXT, hello_utf8)]),
        Case("6.2.2 split between code points", [f(TEXT, hello_utf8[:12], fin=False),
                                                 f(CONT, hello_utf8[12:])], [(TEXT, hello_utf8)]),
        Case("6.2.3 one byte per fragment", in_fragments(hello_utf8, 1), [(TEXT, hello_utf8)]),
        Case("6.2.4 κόσμε one byte per fragment", in_fragments(kosme, 1), [(TEXT, kosme)]),
    ]
    bad = kosme + b"\xed\xa0\x80edited"
    c += [
        Case("6.3.1 invalid UTF-8 in one frame", [f(TEXT, bad)], close=1007),
        Case("6.3.2 invalid UTF-8, one byte per fragment", in_fragments(bad, 1), close=1007),
    ]
    # 6.4: fail fast: the invalid bytes close the connection before the rest is sent.
    c += [
        Case("6.4.1 invalid in the 2nd of 3 frames",
             [f(TEXT, kosme, fin=False), f(CONT, b"\xf4\x90\x80\x80", fin=False), f(CONT, b"edited")],
             close=1007, chopped=True, fail_fast=True),
        Case("6.4.2 invalid from the 2nd frame's first byte",
             [f(TEXT, kosme + b"\xf4", fin=False), f(CONT, b"\x90", fin=False),
              f(CONT, b"\x80\x80edited")], close=1007, chopped=True, fail_fast=True),
        Case("6.4.3 invalid in the 2nd of 3 chops of one frame",
             chop_at(f(TEXT, kosme + b"\xf4\x90\x80\x80edited"), 6 + len(kosme), 4),
             close=1007, chopped=True, fail_fast=True),
        Case("6.4.4 invalid from the 2nd chop's first byte",
             chop_at(f(TEXT, kosme + b"\xf4\x90\x80\x80edited"), 6 + len(kosme) + 1, 1),
             close=1007, chopped=True, fail_fast=True),
    ]
    for i in range(1, len(kosme) + 1):  # 6.6: every prefix of κόσμε, whole or cut in a code point
        prefix = kosme[:i]
        valid = _is_utf8(prefix)
        c.append(Case(f"6.6.{i} prefix {prefix!r}", [f(TEXT, prefix)],
                      [(TEXT, prefix)] if valid else [], close=None if valid else 1007))
    for number, (name, data) in enumerate(UTF8_SAMPLES, start=1):  # 6.5, 6.7-6.23
        valid = _is_utf8(data)
        for how, frames in (("whole", [f(TEXT, data)]), ("bytewise", in_fragments(data, 1))):
            c.append(Case(f"6.x.{number} {name} ({how})", frames,
                          [(TEXT, data)] if valid else [], close=None if valid else 1007))
    # -- 7: close handling ----------------------------------------------------------------------
    close = f(CLOSE, close_body(1000))
    c += [
        Case("7.1.1 echo, then close", [f(TEXT, b"Hello World!")], [(TEXT, b"Hello World!")]),
        Case("7.1.2 two closes", [close, close], close=1000),
        Case("7.1.3 a ping after the close", [close, f(PING)], close=1000),
        Case("7.1.4 a text after the close", [close, f(TEXT, b"after")], close=1000),
        Case("7.1.5 a fragment, the close, its continuation",
             [f(TEXT, b"fragment1", fin=False), close, f(CONT, b"fragment2")], close=1000),
        Case("7.3.1 a close without a body", [f(CLOSE)], close=NO_CODE),
        Case("7.3.2 a close with a 1-byte body", [f(CLOSE, b"a")], close=1002),
        Case("7.3.3 a close with a code", [close], close=1000),
        Case("7.3.4 a close with a reason", [f(CLOSE, close_body(1000, b"Hello World!"))], close=1000),
        Case("7.3.5 a reason of 123 bytes", [f(CLOSE, close_body(1000, b"*" * 123))], close=1000),
        Case("7.3.6 a reason of 124 bytes", [f(CLOSE, close_body(1000, b"*" * 124))], close=1002),
        Case("7.5.1 a reason that is not UTF-8",
             [f(CLOSE, close_body(1000, kosme + b"\xed\xa0\x80edited"))], close=1007),
    ]
    for code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000,
                 3999, 4000, 4999):
        c.append(Case(f"7.7 close code {code} is echoed", [f(CLOSE, close_body(code))], close=code))
    for code in (0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535):
        c.append(Case(f"7.9/7.13 close code {code} is refused", [f(CLOSE, close_body(code))],
                      close=1002))
    # -- 9, scaled to 64 KiB (see the module) ---------------------------------------------------
    big_text, big_binary = b"*" * LIMIT, b"\xfe" * LIMIT
    c.append(Case("9.1 a text of 64 KiB", [f(TEXT, big_text)], [(TEXT, big_text)]))
    c.append(Case("9.2 a binary of 64 KiB", [f(BINARY, big_binary)], [(BINARY, big_binary)]))
    for i, size in enumerate([64, 256, 1024, 4096, 16384, 65536], start=1):
        c.append(Case(f"9.3.{i} 64 KiB text in fragments of {size}", in_fragments(big_text, size),
                      [(TEXT, big_text)]))
        c.append(Case(f"9.4.{i} 64 KiB binary in fragments of {size}",
                      in_fragments(big_binary, size, BINARY), [(BINARY, big_binary)]))
    for i, size in enumerate([64, 4096], start=1):
        c.append(Case(f"9.5.{i} 64 KiB text in chops of {size}", chops(f(TEXT, big_text), size),
                      [(TEXT, big_text)]))
        c.append(Case(f"9.6.{i} 64 KiB binary in chops of {size}",
                      chops(f(BINARY, big_binary), size), [(BINARY, big_binary)]))
    # -- our limits -----------------------------------------------------------------------------
    c += [
        Case("limit: a text of 64 KiB + 1", [f(TEXT, b"*" * (LIMIT + 1))], close=1009),
        Case("limit: 64 KiB + 1 refused from its header, before the payload",
             [f(BINARY, b"\xfe" * (LIMIT + 1))[:14], b"\xfe" * (LIMIT + 1)], close=1009,
             fail_fast=True),
        Case("limit: fragments adding up to 64 KiB + 1",
             [f(TEXT, b"*" * LIMIT, fin=False), f(CONT, b"*")], close=1009),
        Case("limit: 1025 fragments", in_fragments(b"*" * 1025, 1), close=1009),
        Case("limit: empty fragments count", [f(TEXT, b"j", fin=False)] + [f(CONT, fin=False)] * 1100,
             close=1009),
        Case("length: 5 bytes in the 16-bit form", [f(TEXT, b"hello", length_form=126)], close=1002),
        Case("length: 5 bytes in the 64-bit form", [f(TEXT, b"hello", length_form=127)], close=1002),
        Case("length: 300 bytes in the 64-bit form", [f(TEXT, b"*" * 300, length_form=127)],
             close=1002),
        Case("length: the 64-bit length's top bit", [bytes((0x82, 0xFF)) + b"\x80" + b"\0" * 7 + b"mask"],
             close=1002),
        Case("masking: an unmasked frame", [f(TEXT, b"hello", mask=None)], close=1002),
    ]
    return c


def in_fragments(data: bytes, size: int, opcode: int = TEXT) -> list[bytes]:
    parts = chops(data, size) or [b""]
    return [f(opcode if i == 0 else CONT, part, fin=i == len(parts) - 1)
            for i, part in enumerate(parts)]


def chop_at(data: bytes, at: int, width: int) -> list[bytes]:
    return [data[:at], data[at:at + width], data[at + width:]]


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


# Autobahn 6.5 and 6.7-6.23 (after Markus Kuhn's UTF-8 decoder stress test): valid and
# invalid sequences; whether each is valid is Python's strict decoder's answer, which follows
# RFC 3629 (no surrogates, no overlong forms, nothing above U+10FFFF; noncharacters are valid).
UTF8_SAMPLES: list[tuple[str, bytes]] = [
    ("κόσμε", "κόσμε".encode()),
    ("first of 1 byte", b"\x00"), ("first of 2", b"\xc2\x80"), ("first of 3", b"\xe0\xa0\x80"),
    ("first of 4", b"\xf0\x90\x80\x80"),
    ("last of 1", b"\x7f"), ("last of 2", b"\xdf\xbf"), ("last of 3", b"\xef\xbf\xbf"),
    ("U+10FFFF", b"\xf4\x8f\xbf\xbf"), ("U+D7FF", b"\xed\x9f\xbf"), ("U+E000", b"\xee\x80\x80"),
    ("U+FFFD", b"\xef\xbf\xbd"), ("U+110000", b"\xf4\x90\x80\x80"),
    ("5-byte form", b"\xf8\x88\x80\x80\x80"), ("6-byte form", b"\xfc\x84\x80\x80\x80\x80"),
    ("lone continuation", b"\x80"), ("two continuations", b"\x80\xbf"),
    ("continuations 0x80-0xbf", bytes(range(0x80, 0xC0))),
    ("lone starts, spaced", b"\xc0 \xc1 \xe0 \xf0 \xf8 \xfc "),
    ("2-byte start cut", b"\xdf"), ("3-byte start cut", b"\xef\xbf"),
    ("4-byte start cut", b"\xf4\x8f\xbf"), ("cut sequences together", b"\xc0\xe0\x80\xf0\x80\x80"),
    ("fe", b"\xfe"), ("ff", b"\xff"), ("fe fe ff ff", b"\xfe\xfe\xff\xff"),
    ("overlong /", b"\xc0\xaf"), ("overlong / in 3", b"\xe0\x80\xaf"),
    ("overlong / in 4", b"\xf0\x80\x80\xaf"), ("overlong max 2", b"\xc1\xbf"),
    ("overlong max 3", b"\xe0\x9f\xbf"), ("overlong max 4", b"\xf0\x8f\xbf\xbf"),
    ("overlong NUL", b"\xc0\x80"), ("overlong NUL in 3", b"\xe0\x80\x80"),
    ("surrogate D800", b"\xed\xa0\x80"), ("surrogate DFFF", b"\xed\xbf\xbf"),
    ("surrogate pair", b"\xed\xa0\x80\xed\xb0\x80"),
    ("noncharacter U+FFFE", b"\xef\xbf\xbe"), ("noncharacter U+FFFF", b"\xef\xbf\xbf"),
    ("noncharacter U+FDD0", b"\xef\xb7\x90"), ("noncharacter U+10FFFE", b"\xf4\x8f\xbf\xbe"),
]


@pytest.fixture
async def echo() -> AsyncIterator[tuple[str, int]]:
    async with echo_server() as address:
        yield address


async def play(client: RawClient, case: Case) -> None:
    pieces = case.send[:-1] if case.fail_fast else case.send
    for piece in pieces:
        await client.send(piece)
        if case.chopped:
            await trio.sleep(0.002)  # the server reads each piece on its own
    if case.fail_fast:
        # The close must come now, without the rest; then the rest is sent (too late to matter).
        closed = await client.read_until(lambda r: r.got_close, timeout=2.0)
        assert closed and client.received.got_close, f"{case.name}: not failed fast"


async def finish(client: RawClient, case: Case) -> None:
    """Wait for the expected frames, close as the suite does, and check the ending."""
    received = client.received
    if case.close is None:
        await client.frames(len(case.expect))
        assert not received.got_close, f"{case.name}: closed with {received.close_code}"
        await client.send(f(CLOSE, close_body(CLEAN)))
        expected: set[int] = {CLEAN}
    else:
        expected = case.close if isinstance(case.close, set) else {case.close}
    await client.read_until(lambda r: r.got_close, timeout=5.0)
    assert received.got_close, f"{case.name}: no close frame"
    code = received.close_code if received.close_code is not None else NO_CODE
    assert code in expected, f"{case.name}: closed with {code}, expected {expected}"
    if case.close is not None:
        await client.send(f(CLOSE, close_body(code if code != NO_CODE else CLEAN)))
    await client.closing(timeout=3.0)  # then the server ends the TCP connection
    assert received.closed, f"{case.name}: the connection stayed open after the close"
    assert received.data == case.expect, f"{case.name}: answered {received.data[:5]!r}"


CASES = cases()


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
async def test_autobahn_case(echo: tuple[str, int], case: Case) -> None:
    with trio.fail_after(10):
        async with raw_client(echo) as client:
            await play(client, case)
            await finish(client, case)


@pytest.mark.parametrize("size", [0, 64, 4096])
async def test_9_7_a_thousand_messages_one_after_another(echo: tuple[str, int], size: int) -> None:
    """9.7 / 9.8: 1,000 messages, each echoed before the next is sent."""
    with trio.fail_after(20):
        async with raw_client(echo) as client:
            for i in range(1000):
                opcode = TEXT if i % 2 else BINARY
                await client.send(f(opcode, b"*" * size))
                (answer,) = (await client.frames(i + 1))[i:]
                assert answer == (opcode, b"*" * size)


# -- the attacks of issue 21, against the same endpoint ------------------------------------------

async def healthz_worst(address: tuple[str, int], stop: trio.Event, worst: list[float]) -> None:
    """Ask ``/healthz`` on its own connection until ``stop``; the slowest answer in ``worst``."""
    async with httpx.AsyncClient(base_url=f"http://{address[0]}:{address[1]}") as http:
        while not stop.is_set():
            started = time.perf_counter()
            assert (await http.get("/healthz")).text == "ok"
            worst[0] = max(worst[0], time.perf_counter() - started)
            await trio.sleep(0.005)


async def test_40000_empty_fragments_are_closed_at_once_and_healthz_answers(
    echo: tuple[str, int],
) -> None:
    """The issue's attack: ``01 81 <mask> 6a`` then ``00 80 <mask>`` x 40,000 on four sockets.
    It cost 12.6 s of CPU per socket; now the fragment budget closes each at fragment 1,025."""
    attack = f(TEXT, b"j", fin=False) + f(CONT, fin=False) * 40_000
    worst, stop, codes = [0.0], trio.Event(), []
    started = time.process_time()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(healthz_worst, echo, stop, worst)

            async def attacker() -> None:
                async with raw_client(echo) as client:
                    await client.send(attack)
                    await client.read_until(lambda r: r.got_close, timeout=5)
                    codes.append(client.received.close_code)
                    assert client.received.data == []

            async with trio.open_nursery() as attackers:
                for _ in range(4):
                    attackers.start_soon(attacker)
            stop.set()
    cpu = time.process_time() - started  # the test's own client included
    print(f"4 x 40,000 empty fragments: closed {codes}, {cpu:.2f} s CPU (server and clients),"
          f" /healthz worst {worst[0] * 1000:.1f} ms")
    assert codes == [1009] * 4
    assert worst[0] < 0.1, f"/healthz took {worst[0] * 1000:.0f} ms during the attack"
    assert cpu < 2.0, f"{cpu:.2f} s of CPU"


async def test_20000_pings_get_at_most_a_burst_of_pongs_then_1008(echo: tuple[str, int]) -> None:
    """Every frame counts against the frame rate: 20,000 pings in one go got 20,000 pongs; now
    at most the budget's burst (2,000) is answered before the connection is closed with 1008."""
    burst = FrameLimits().frame_rate.count
    worst, stop = [0.0], trio.Event()
    started = time.perf_counter()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(healthz_worst, echo, stop, worst)
            async with raw_client(echo) as client:
                await client.send(f(PING, b"x") * 20_000)
                await client.read_until(lambda r: r.got_close, timeout=5)
            stop.set()
    pongs = sum(op == PONG for op, _ in client.received.frames)
    print(f"20,000 pings: {pongs} pongs, then {client.received.close_code} after"
          f" {(time.perf_counter() - started) * 1000:.0f} ms; /healthz worst {worst[0] * 1000:.1f} ms")
    assert client.received.close_code == 1008
    assert pongs <= burst * 1.1  # the burst, and what refills while it is parsed
    assert time.perf_counter() - started < 2.0
    assert worst[0] < 0.1, f"/healthz took {worst[0] * 1000:.0f} ms during the attack"


async def test_the_frame_rate_refills() -> None:
    """A client under the rate is never cut: 3 bursts of 80% of the budget a second apart."""
    limits = FrameLimits(frame_rate=Rate(100, 0.2))
    async with echo_server(limits) as address, raw_client(address) as client:
        with trio.fail_after(10):
            for burst in range(3):
                await client.send(f(PING, b"p") * 80)
                assert len(await client.frames(80 * (burst + 1))) == 80 * (burst + 1)
                await trio.sleep(0.2)
            assert not client.received.got_close
