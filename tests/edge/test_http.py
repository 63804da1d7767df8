"""``edge.http`` on its own: the request reader fed bytes (no sockets, a fake clock), its
deadlines, and how responses are written."""

from __future__ import annotations

import socket
import tracemalloc
from collections.abc import Iterator

import pytest
import trio

from nursery.edge.http import HttpLimits, Request, Response, write_response
from nursery.edge.reader import RequestReader

LIMITS = HttpLimits(max_body=1024, header_timeout=10, body_min_rate=100, request_timeout=30,
                    idle_timeout=75)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def reader(limits: HttpLimits = LIMITS, clock: Clock | None = None) -> RequestReader:
    return RequestReader(("127.0.0.1", 1), limits, clock or Clock())


def test_pipelined_requests_are_read_in_order() -> None:
    r = reader()
    r.feed(b"GET /a?x=1 HTTP/1.1\r\nHost: h\r\n\r\nPOST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi")
    first, second = r.ready
    assert (first.method, first.path, first.args, first.headers) == ("GET", "/a", {"x": "1"}, {"host": "h"})
    assert (second.method, second.path, second.body) == ("POST", "/b", b"hi")
    assert r.refusal is None and not r.started


def test_repeated_headers_are_joined_and_trailers_dropped() -> None:
    r = reader()
    r.feed(b"POST /b HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nx-a: 2\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"2;ext=1\r\nhi\r\n0\r\nX-A: 3\r\nAuthorization: Bearer t\r\n\r\n")
    (request,) = r.ready
    assert request.headers == {"host": "h", "x-a": "1, 2", "transfer-encoding": "chunked"}
    assert request.body == b"hi"


def test_a_refusal_after_good_requests_keeps_them() -> None:
    r = reader()
    r.feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\nGET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert len(r.ready) == 1
    assert r.refusal is not None and r.refusal[0] == 400


def test_a_websocket_upgrade_keeps_what_follows_it() -> None:
    r = reader()
    r.feed(b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\n\r\n\x81\x80")
    (request,) = r.ready
    assert request.upgrade and r.leftover == b"\x81\x80"


def test_an_h2c_upgrade_is_read_as_a_plain_request_with_its_body() -> None:
    r = reader()
    r.feed(b"POST /e HTTP/1.1\r\nHost: h\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n"
           b"Content-Length: 3\r\n\r\nab")
    assert not r.ready and r.started
    r.feed(b"cGET /n HTTP/1.1\r\nHost: h\r\n\r\n")
    first, second = r.ready
    assert (first.path, first.body, first.upgrade) == ("/e", b"abc", False)
    assert "upgrade" not in first.headers and first.headers["connection"] == "HTTP2-Settings"
    assert second.path == "/n"


def test_an_unterminated_header_line_is_refused_within_one_read_of_the_budget() -> None:
    """16 MiB of one header line, in 64 KiB reads: refused after at most the budget plus one
    read, and what is held meanwhile stays within that (not the 16 MiB)."""
    r = reader()
    r.feed(b"GET / HTTP/1.1\r\nHost: h\r\nX-A: ")
    piece = b"a" * 65536
    fed = 0
    tracemalloc.start()
    try:
        while r.refusal is None and fed < 16 * 1024 * 1024:
            r.feed(piece)
            fed += len(piece)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert r.refusal is not None and r.refusal[0] == 431
    assert fed <= LIMITS.max_header_bytes + len(piece)
    assert peak < 4 * (LIMITS.max_header_bytes + len(piece))


def test_chunk_framing_and_trailers_count_against_the_header_budget() -> None:
    r = reader(HttpLimits(max_header_bytes=200, max_body=100_000))
    r.feed(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
    for _ in range(100):  # 1-byte chunks: 6 bytes of framing per byte of body
        r.feed(b"1\r\na\r\n")
    assert r.refusal is not None and r.refusal[0] == 431


@pytest.mark.parametrize(("head", "status"), [
    (b"GET / HTTP/1.1\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a@b\r\n\r\n", 400),
    (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
    (b"FOO / HTTP/1.1\r\nHost: a\r\n\r\n", 501),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
    (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1025\r\n\r\n", 413),
])
def test_heads_refused(head: bytes, status: int) -> None:
    r = reader()
    r.feed(head)
    assert r.refusal is not None and r.refusal[0] == status
    assert not r.ready


def test_100_continue_is_expected_only_from_http_1_1() -> None:
    r = reader()
    r.feed(b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n")
    assert r.expects_continue
    r.feed(b"x")
    assert not r.expects_continue
    r = reader()
    r.feed(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n")
    assert not r.expects_continue


def test_deadlines_run_from_the_first_byte_not_the_last_read() -> None:
    clock = Clock()
    r = reader(HttpLimits(max_body=4096, header_timeout=10, body_min_rate=100, request_timeout=30,
                          idle_timeout=75), clock)
    assert r.deadline(idle_since=clock.now) == clock.now + LIMITS.idle_timeout
    start = clock.now
    r.feed(b"G")
    assert r.deadline(clock.now) == start + LIMITS.header_timeout
    clock.now += 5
    r.feed(b"ET / HTTP/1.1\r\nHost: a\r\n")  # more bytes: the same deadline
    assert r.deadline(clock.now) == start + LIMITS.header_timeout
    r.feed(b"Content-Length: 3000\r\n\r\n")
    head_done = clock.now
    assert r.deadline(clock.now) == head_done + LIMITS.header_timeout
    r.feed(b"a" * 500)  # 500 bytes at 100 bytes/s: 5 s more
    assert r.deadline(clock.now) == head_done + LIMITS.header_timeout + 5
    r.feed(b"a" * 1500)  # never past the whole request's deadline
    assert r.deadline(clock.now) == start + LIMITS.request_timeout


def test_blank_lines_do_not_start_a_request() -> None:
    r = reader()
    r.feed(b"\r\n\r\n")
    assert not r.started and r.refusal is None


class _Edge:
    http_limits = LIMITS

    def draining(self) -> bool:
        return False

    async def respond(self, request: Request) -> Response:
        raise NotImplementedError

    def error(self, request: Request, status: int, code: str, message: str) -> Response:
        return Response(status)

    def finish(self, request: Request, response: Response) -> None:
        pass


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    a.setblocking(False)
    yield a, b
    a.close()
    b.close()


@pytest.mark.parametrize(("method", "version", "status", "keep_alive", "expected", "absent"), [
    ("GET", "1.1", 200, True, [b"content-length: 4\r\n", b"\r\n\r\nbody"], [b"connection:"]),
    ("HEAD", "1.1", 200, True, [b"content-length: 4\r\n"], [b"body"]),
    ("GET", "1.1", 204, True, [], [b"content-length", b"body"]),
    ("GET", "1.0", 200, True, [b"connection: keep-alive\r\n"], []),
    ("GET", "1.1", 200, False, [b"connection: close\r\n"], []),
])
async def test_how_a_response_is_written(
    pair: tuple[socket.socket, socket.socket], method: str, version: str, status: int,
    keep_alive: bool, expected: list[bytes], absent: list[bytes],
) -> None:
    server, client = pair
    request = Request(method, b"/", b"", {}, b"", ("c", 1), version)
    body = b"" if status == 204 else b"body"
    with trio.fail_after(5):
        assert await write_response(server, _Edge(), request, Response(status, body), keep_alive=keep_alive)
    written = client.recv(65536)
    assert written.startswith(f"HTTP/1.1 {status} ".encode())
    assert b"\r\ndate: " in written
    for part in expected:
        assert part in written
    for part in absent:
        assert part not in written
