"""Keep-alive connections stay usable whatever their requests were answered (401, 404, 405,
a preflight): the next request on the same connection is answered. A request whose body
never comes is answered 408 after ``http_request_timeout`` and its connection closed, so a
client (or the proxy, reusing the connection for another user) is never left hanging.
"""

from __future__ import annotations

import trio

from tests.harness import start_instance

CASES = [
    ("POST", "/api/todos"),  # 401
    ("GET", "/healthz"),
    ("GET", "/nothing-here"),  # 404
    ("DELETE", "/api/auth/login"),  # 405
    ("OPTIONS", "/api/todos"),
    ("POST", "/graphql"),  # passed on to the Quart app
]


async def test_every_answer_leaves_the_connection_usable(database_url: str) -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            instance = await start_instance(nursery, database_url)
            stream = await _connect(instance.url)
            for method, path in CASES:
                body = b'{"title": "late"}'
                await stream.send_all(
                    f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
                first = await _response(stream)
                assert not first.startswith(b"HTTP/1.1 5"), first[:80]
            await stream.send_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await _response(stream)).startswith(b"HTTP/1.1 200")
            await stream.aclose()
            nursery.cancel_scope.cancel()


async def test_a_body_that_never_comes_is_408_and_closed(database_url: str) -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            instance = await start_instance(nursery, database_url, http_request_timeout=1)
            stream = await _connect(instance.url)
            await stream.send_all(b"POST /api/todos HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
            start = trio.current_time()
            answer = await _response(stream)
            assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
            assert 0.9 <= trio.current_time() - start < 5
            assert b"connection: close" in answer.lower()
            assert await _rest(stream) == b""  # closed
            nursery.cancel_scope.cancel()


async def _connect(url: str) -> trio.SocketStream:
    host, port = url.removeprefix("http://").split(":")
    return await trio.open_tcp_stream(host, int(port))


async def _response(stream: trio.SocketStream) -> bytes:
    received = b""
    with trio.fail_after(5):
        while not _complete(received):
            chunk = await stream.receive_some(65536)
            assert chunk, f"closed after {received[:80]!r}"
            received += chunk
    return received


async def _rest(stream: trio.SocketStream) -> bytes:
    with trio.fail_after(5):
        try:
            return await stream.receive_some(65536)
        except trio.BrokenResourceError:  # reset: closed, as good as EOF here
            return b""


def _complete(response: bytes) -> bool:
    """Whether ``response`` holds a whole HTTP response (head and Content-Length body)."""
    head, separator, body = response.partition(b"\r\n\r\n")
    if not separator:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return True
