"""Property-based tests of the request reader (hypothesis): a valid stream of pipelined
requests reads the same however it is split into reads; any bytes at all, however split,
never raise and never hold more than the budgets allow; and over a real socket, the edge
answers random bytes with whole responses (or closes) and never fails a connection."""

from __future__ import annotations

import logging

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nursery.edge import EdgeLimits
from nursery.edge.http import HttpLimits
from nursery.edge.reader import RequestReader
from tests.edge.serving import split_responses, start_edge, unparsed

LIMITS = HttpLimits(max_body=2048, max_url=256, max_headers=20, max_header_bytes=1024)
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TOKEN = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)
VALUE = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ;=,/.-_",
                max_size=30)


@st.composite
def requests(draw: st.DrawFn) -> tuple[bytes, tuple[str, str, dict[str, str], bytes]]:
    """One valid request (its bytes) and what reading it must give."""
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE"]))
    path = "/" + draw(TOKEN)
    fields = draw(st.lists(st.tuples(TOKEN.map(lambda t: "x-" + t), VALUE), max_size=5))
    body = draw(st.binary(max_size=300)) if method in ("POST", "PUT") else b""
    chunked = bool(body) and draw(st.booleans())
    lines = [f"{method} {path} HTTP/1.1", "Host: example.test"]
    lines += [f"{name}: {value}" for name, value in fields]
    headers: dict[str, str] = {"host": "example.test"}
    for name, value in fields:
        value = value.strip(" ")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    if chunked:
        lines.append("Transfer-Encoding: chunked")
        headers["transfer-encoding"] = "chunked"
        cuts = sorted(draw(st.sets(st.integers(1, len(body) - 1), max_size=4))) if len(body) > 1 else []
        pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
        wire_body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    elif body:
        lines.append(f"Content-Length: {len(body)}")
        headers["content-length"] = str(len(body))
        wire_body = body
    else:
        wire_body = b""
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + wire_body, (method, path, headers, body)


READ = 512  # the largest read here (the edge reads 64 KiB at most)


def splits(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at ``cuts`` (and every READ bytes), as the reads that bring it."""
    points = sorted({c % (len(data) + 1) for c in cuts} | set(range(READ, len(data), READ)))
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True) if b > a]


def read(pieces: list[bytes]) -> RequestReader:
    reader = RequestReader(("127.0.0.1", 1), LIMITS, clock=lambda: 0.0)
    for piece in pieces:
        if reader.refusal is not None:
            break
        reader.feed(piece)
        # Held: within the budgets, plus one read (a URL grows by a read before it is refused).
        held = len(reader._url) + sum(len(n) + len(v) for n, v in reader._headers)
        assert held <= LIMITS.max_url + LIMITS.max_header_bytes + READ
        assert reader._body_size <= LIMITS.max_body
        # What httptools holds of an unfinished line: counted against the budget.
        assert reader.refusal is not None or reader._wire - reader._body_size <= LIMITS.max_header_bytes
    return reader


@FAST
@given(st.lists(requests(), min_size=1, max_size=6), st.lists(st.integers(0, 10_000), max_size=12))
def test_any_split_of_a_valid_stream_reads_the_same(
    stream: list[tuple[bytes, tuple[str, str, dict[str, str], bytes]]], cuts: list[int],
) -> None:
    data = b"".join(wire for wire, _ in stream)
    reader = read(splits(data, cuts))
    assert reader.refusal is None
    got = [(r.method, r.path, r.headers, r.body) for r in reader.ready]
    assert got == [expected for _, expected in stream]
    assert not reader.started


@FAST
@given(st.binary(max_size=4000), st.lists(st.integers(0, 10_000), max_size=12))
def test_random_bytes_never_raise_nor_exceed_the_budgets(data: bytes, cuts: list[int]) -> None:
    read(splits(data, cuts))


@FAST
@given(st.lists(requests(), min_size=1, max_size=3), st.data())
def test_mutated_requests_never_raise_nor_exceed_the_budgets(
    stream: list[tuple[bytes, tuple[str, str, dict[str, str], bytes]]], data: st.DataObject,
) -> None:
    wire = bytearray(b"".join(w for w, _ in stream))
    for _ in range(data.draw(st.integers(1, 8))):
        at = data.draw(st.integers(0, len(wire)))
        action = data.draw(st.sampled_from(["flip", "insert", "delete", "repeat"]))
        if action == "flip" and at < len(wire):
            wire[at] = data.draw(st.integers(0, 255))
        elif action == "insert":
            wire[at:at] = data.draw(st.sampled_from([b"\r", b"\n", b"\x00", b" ", b":", b"\r\n",
                                                     b"Transfer-Encoding: chunked\r\n",
                                                     b"Content-Length: 5\r\n", b"a" * 3000]))
        elif action == "delete":
            del wire[at:at + data.draw(st.integers(1, 20))]
        elif action == "repeat":
            wire[at:at] = wire[at:at + 200] * data.draw(st.integers(1, 20))
    read(splits(bytes(wire), data.draw(st.lists(st.integers(0, 100_000), max_size=12))))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(min_size=1, max_size=3000), prefixed=st.booleans())
def test_the_edge_answers_any_bytes_with_whole_responses(
    caplog: pytest.LogCaptureFixture, data: bytes, prefixed: bool,
) -> None:
    """Over a real socket: random bytes (after a valid request, or alone) get whole responses
    and a close, or an idle connection; never a failed connection task."""
    if prefixed:
        data = b"GET /headers HTTP/1.1\r\nHost: x\r\n\r\n" + data
    caplog.set_level(logging.ERROR, logger="nursery.edge.listener")
    caplog.clear()

    async def main() -> bytes:
        async with trio.open_nursery() as nursery:
            served = await start_edge(nursery, EdgeLimits(http=HttpLimits(idle_timeout=0.2,
                                                                         header_timeout=0.2)))
            stream = await served.connect()
            await stream.send_all(data)
            received = b""
            with trio.fail_after(5):
                while chunk := await _receive(stream):
                    received += chunk
            await stream.aclose()
            nursery.cancel_scope.cancel()
        return received

    received = trio.run(main)
    answered = split_responses(received)
    assert unparsed(received) == b""  # nothing half-written
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    if prefixed:
        assert answered and answered[0][0] == 200


async def _receive(stream: trio.SocketStream) -> bytes:
    try:
        return await stream.receive_some(65536)
    except trio.BrokenResourceError:
        return b""


@FAST
@given(st.lists(requests(), max_size=3), st.sampled_from([b"GET /", b"GET / HTTP/1.1\r\nX-", b"GET / HTTP/1.1\r\nX-A: ",
                                                         b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1;",
                                                         b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-A: "]),
       st.integers(0, 6000), st.lists(st.integers(0, 20_000), max_size=12))
def test_an_unfinished_head_never_holds_more_than_the_budget(
    stream: list[tuple[bytes, tuple[str, str, dict[str, str], bytes]]], opening: bytes, size: int,
    cuts: list[int],
) -> None:
    """A line that never ends (URL, header name or value, chunk extension, trailer), after
    valid requests: refused once past the budget, whatever the reads. (The read in which it
    begins after another request is not counted: the parser does not say where in it.)"""
    data = b"".join(w for w, _ in stream) + opening + b"a" * size
    reader = read(splits(data, cuts))
    if size > LIMITS.max_header_bytes + 2 * READ:
        assert reader.refusal is not None and reader.refusal[0] in (414, 431)
