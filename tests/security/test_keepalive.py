"""A request answered before its body arrived (401, 404, 405 without reading it) must not
wedge its keep-alive connection: the next request on it is answered, or the connection is
closed so the client (or the proxy, reusing it for another user) opens a new one.

Found by the REST fuzz: such a connection stayed open forever and the next request on it
hung (see ``nursery.api.inflight._finishing_shielded``).
"""

from __future__ import annotations

import trio

from tests.harness import start_instance

CASES = [
    ("POST", "/api/todos"),  # 401: the token is checked before the body is read
    ("GET", "/healthz"),
    ("GET", "/nothing-here"),  # 404
    ("DELETE", "/api/auth/login"),  # 405
    ("OPTIONS", "/api/todos"),
]


async def test_an_unread_body_does_not_wedge_the_connection(database_url: str) -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            instance = await start_instance(nursery, database_url)
            host, port = instance.url.removeprefix("http://").split(":")
            for method, path in CASES:
                for body_comes in (True, False):
                    stream = await trio.open_tcp_stream(host, int(port))
                    body = b'{"title": "late"}'
                    await stream.send_all(f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                          f"Content-Length: {len(body)}\r\n\r\n".encode())
                    received = b""
                    with trio.fail_after(5):  # the whole first answer
                        while not _complete(received):
                            received += await stream.receive_some(65536)
                    if body_comes:  # after the answer
                        await stream.send_all(body)
                    await trio.sleep(0.1)  # the next request on its own: it found the wedge
                    try:
                        await stream.send_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                    except trio.BrokenResourceError:
                        pass  # closed already: fine
                    rest = b""
                    with trio.move_on_after(3) as waited:  # answered, or closed: not left hanging
                        while chunk := await _receive(stream):
                            rest += chunk
                            if rest.startswith(b"HTTP/1.1 200") and _complete(rest):
                                break
                    assert not waited.cancelled_caught, (method, path, body_comes, received[:60], rest[:200])
                    await stream.aclose()
            nursery.cancel_scope.cancel()


async def _receive(stream: trio.SocketStream) -> bytes:
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
