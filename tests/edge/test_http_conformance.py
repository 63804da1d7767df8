"""The edge's HTTP/1.1 against hostile and odd requests (RFC 9112 / 9110), byte for byte on
the real listener: framing and smuggling shapes, limits, Host, versions, methods, Upgrade,
trailers, pipelining order and 100 Continue. Each case answers as h11 / Hypercorn do, or
stricter (docs/api.md, "On purpose").
"""

from __future__ import annotations

import json

import pytest
import trio
import trio.testing

from nursery.edge import EdgeLimits
from nursery.edge.http import HttpLimits
from tests.edge.serving import Served, exchange, read_until, split_responses, start_edge, statuses

LIMITS = EdgeLimits(http=HttpLimits(max_body=1024, header_timeout=2, request_timeout=4))
KEY = "dGhlIHNhbXBsZSBub25jZQ=="


@pytest.fixture
async def served(nursery: trio.Nursery) -> Served:
    return await start_edge(nursery, LIMITS)


def get(path: str = "/headers", *extra: str, version: str = "1.1", host: str | None = "x") -> bytes:
    lines = [f"GET {path} HTTP/{version}"]
    if host is not None:
        lines.append(f"Host: {host}")
    return ("\r\n".join([*lines, *extra]) + "\r\n\r\n").encode()


AFTER = get("/headers", "Connection: close")  # never answered after a refusal

# (name, bytes sent in one write, the statuses answered before the server closes). Every
# refusal closes the connection: the request that follows it (AFTER) is never answered.
CASES: list[tuple[str, bytes, list[int]]] = [
    ("plain", get("/headers", "Connection: close"), [200]),
    ("keep-alive then close", get() + AFTER, [200, 200]),
    # framing and smuggling
    ("CL and TE", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + AFTER, [400]),
    ("two CL, different", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
                          b"Content-Length: 2\r\n\r\nab" + AFTER, [400]),
    ("two CL, same", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
                     b"Content-Length: 1\r\n\r\na" + AFTER, [400]),
    ("signed CL", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: +1\r\n\r\na" + AFTER, [400]),
    ("negative CL", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\na" + AFTER, [400]),
    ("TE gzip, chunked", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
                         b"0\r\n\r\n" + AFTER, [501]),
    ("TE chunked twice", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + AFTER, [400]),
    ("TE gzip alone", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n" + AFTER, [501]),
    ("TE xchunked", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n"
                    b"0\r\n\r\n" + AFTER, [501]),
    ("TE on HTTP/1.0", b"POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + AFTER, [400]),
    ("obs-fold", b"GET /headers HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n" + AFTER, [400]),
    ("bare LF", b"GET /headers HTTP/1.1\nHost: x\n\n" + AFTER, [400]),
    ("bare CR", b"GET /headers HTTP/1.1\r\nHost: x\rX-A: b\r\n\r\n" + AFTER, [400]),
    ("NUL in a value", b"GET /headers HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n" + AFTER, [400]),
    ("space before colon", b"GET /headers HTTP/1.1\r\nHost : x\r\n\r\n" + AFTER, [400]),
    ("bad chunk size", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                       b"zz\r\n" + AFTER, [400]),
    ("garbage", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + AFTER, [400]),
    # limits
    ("URL over 8 KiB", get("/headers?" + "a" * 9000) + AFTER, [414]),
    ("101 headers", get("/headers", *(f"X-{i}: v" for i in range(101))) + AFTER, [431]),
    ("headers over 32 KiB", get("/headers", *(f"X-{i}: {'v' * 4000}" for i in range(9))) + AFTER, [431]),
    ("an unterminated line over 32 KiB",
     b"GET /headers HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * (40 * 1024), [431]),
    ("an unterminated name over 32 KiB",
     b"GET /headers HTTP/1.1\r\nHost: x\r\nX-" + b"a" * (40 * 1024), [431]),
    ("body over the limit", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n" + AFTER, [413]),
    ("chunked body over the limit", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                                    b"\r\n800\r\n" + b"a" * 2048 + b"\r\n0\r\n\r\n" + AFTER, [413]),
    ("chunk extensions over 32 KiB", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                                     b"\r\n1;e=" + b"x" * (40 * 1024), [431]),
    # Host (RFC 9112 §3.2)
    ("no Host", get(host=None) + AFTER, [400]),
    ("two Hosts", get("/headers", "Host: y") + AFTER, [400]),
    ("Host a b", get(host="a b") + AFTER, [400]),
    ("Host with a path", get(host="a/b") + AFTER, [400]),
    ("Host with a port", get("/headers", "Connection: close", host="a.example:8080"), [200]),
    ("Host an IPv6 literal", get("/headers", "Connection: close", host="[::1]:80"), [200]),
    ("HTTP/1.0 without Host", get("/headers", version="1.0", host=None), [200]),
    # versions
    ("HTTP/2.0", get(version="2.0") + AFTER, [505]),
    ("HTTP/3.0", get(version="3.0") + AFTER, [505]),
    ("HTTP/0.9", b"GET /headers\r\n\r\n" + AFTER, [400]),
    ("HTTP/0.9 line alone: refused at once, not at the deadline", b"GET /headers\r\n", [400]),
    ("HTTP/1.0 closes", get(version="1.0") + AFTER, [200]),
    ("HTTP/1.0 keep-alive", get("/headers", "Connection: keep-alive", version="1.0") + AFTER, [200, 200]),
    # methods
    ("FOO", b"FOO /headers HTTP/1.1\r\nHost: x\r\n\r\n" + AFTER, [501]),
    ("PROPFIND, then the next request", b"PROPFIND /headers HTTP/1.1\r\nHost: x\r\n\r\n" + AFTER, [405, 200]),
    ("TRACE: no route serves it", b"TRACE /headers HTTP/1.1\r\nHost: x\r\n\r\n" + AFTER, [405, 200]),
    ("CONNECT", b"CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n" + AFTER, [501]),
    ("a route's other method", b"DELETE /headers HTTP/1.1\r\nHost: x\r\n\r\n" + AFTER, [405, 200]),
    # Upgrade
    ("Upgrade: h2c is served", get("/headers", "Upgrade: h2c", "Connection: Upgrade, HTTP2-Settings",
                                   "HTTP2-Settings: AAMAAABkAAQAAP__") + AFTER, [200, 200]),
    ("Upgrade: h2c with a body", b"POST /echo HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\n"
                                 b"Connection: Upgrade\r\nContent-Length: 3\r\n\r\nabc" + AFTER, [200, 200]),
    ("a websocket over HTTP/1.0", get("/ws", "Upgrade: websocket", "Connection: Upgrade",
                                      "Sec-WebSocket-Version: 13", f"Sec-WebSocket-Key: {KEY}",
                                      version="1.0"), [426]),
    ("a websocket elsewhere", get("/headers", "Upgrade: websocket", "Connection: Upgrade",
                                  "Sec-WebSocket-Version: 13", f"Sec-WebSocket-Key: {KEY}"), [404]),
    # pipelining: a bad request after good ones is refused after their answers
    ("bad after two good", get() + get() + b"GET /headers HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
                                           b"Content-Length: 2\r\n\r\n" + AFTER, [200, 200, 400]),
    ("blank lines between requests", get() + b"\r\n\r\n" + AFTER, [200, 200]),
]


@pytest.mark.parametrize(("data", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_answers_then_closes(served: Served, data: bytes, expected: list[int]) -> None:
    with trio.fail_after(10):
        answer = await exchange(served, data)
    assert statuses(answer) == expected, answer[:300]
    last = split_responses(answer)[-1][1]
    assert last.get("connection") == "close"


async def test_trailers_never_become_headers(served: Served) -> None:
    with trio.fail_after(10):
        answer = await exchange(served, b"GET /headers HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                                b"0\r\nAuthorization: Bearer stolen\r\nX-Forwarded-For: 6.6.6.6\r\nHost: evil\r\n"
                                b"\r\n" + AFTER)
    (status, _, body), _ = split_responses(answer)
    assert status == 200
    assert json.loads(body) == {"host": "x", "transfer-encoding": "chunked"}


async def test_header_values_lose_their_surrounding_whitespace(served: Served) -> None:
    with trio.fail_after(10):
        answer = await exchange(served, get("/headers", "X-A: \t a b \t", "Connection: close "))
    (status, _, body), = split_responses(answer)
    assert status == 200 and json.loads(body)["x-a"] == "a b"


async def test_a_websocket_key_with_a_trailing_space_is_accepted(served: Served) -> None:
    stream = await served.connect()
    with trio.fail_after(10):
        await stream.send_all(get("/ws", "Upgrade: websocket", "Connection: Upgrade",
                                  "Sec-WebSocket-Version: 13", f"Sec-WebSocket-Key: {KEY} "))
        answer = await read_until(stream, closed=False)
    assert answer.startswith(b"HTTP/1.1 101 ")
    assert b"sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in answer
    await stream.aclose()


async def test_pipelined_answers_come_in_order(served: Served) -> None:
    """A slow first request holds the answers to the ones behind it, never reorders them."""
    stream = await served.connect()
    with trio.fail_after(10):
        await stream.send_all(get("/slow") + b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"
                              + AFTER)
        await trio.testing.wait_all_tasks_blocked()
        assert served.answered == []
        served.release_slow.set()
        answer = await read_until(stream)
    assert [body for _, _, body in split_responses(answer)][:2] == [b"slow", b"hi"]
    assert served.answered == ["GET /slow", "POST /echo", "GET /headers"]


async def test_100_continue_comes_after_the_earlier_answers(served: Served) -> None:
    stream = await served.connect()
    with trio.fail_after(10):
        await stream.send_all(get("/slow") + b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                              b"Expect: 100-continue\r\nConnection: close\r\n\r\n")
        await trio.testing.wait_all_tasks_blocked()
        served.release_slow.set()
        head = await read_until(stream, closed=False)
        while b"100 Continue" not in head:
            head += await stream.receive_some(65536)
        assert head.index(b"HTTP/1.1 200 ") < head.index(b"HTTP/1.1 100 Continue\r\n\r\n")
        await stream.send_all(b"abc")
        rest = head.split(b"HTTP/1.1 100 Continue\r\n\r\n", 1)[1] + await read_until(stream)
    assert statuses(rest) == [200] and split_responses(rest)[0][2] == b"abc"


async def test_no_100_continue_for_http_1_0(served: Served) -> None:
    stream = await served.connect()
    with trio.fail_after(10):
        await stream.send_all(b"POST /echo HTTP/1.0\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
        await trio.testing.wait_all_tasks_blocked()
        await stream.send_all(b"abc")
        answer = await read_until(stream)
    assert answer.startswith(b"HTTP/1.1 200 ") and b"100 Continue" not in answer
    assert split_responses(answer)[0][2] == b"abc"


async def test_an_upgrade_after_pipelined_requests_answers_them_first(served: Served) -> None:
    stream = await served.connect()
    with trio.fail_after(10):
        await stream.send_all(get() + get("/ws", "Upgrade: websocket", "Connection: Upgrade",
                                          "Sec-WebSocket-Version: 13", f"Sec-WebSocket-Key: {KEY}"))
        answer = await read_until(stream, closed=False)
        while b"101 Switching Protocols" not in answer:
            answer += await stream.receive_some(65536)
    assert answer.startswith(b"HTTP/1.1 200 ")
    await stream.aclose()
