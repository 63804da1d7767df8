"""Minimal HTTP/1.1 and websocket clients for the load generator, on raw Trio sockets.

Why not httpx and trio-websocket (wsproto): their CPU per request and per frame (~4 ms per
write and its deliveries, 0.6 core at 200 writes/s) competes with the servers on the same
machine and distorts what the benchmarks measure. Even Trio's ``SocketStream`` costs a
scheduler round per send and per receive. These clients do only what the benchmarks need:
non-blocking sockets, one ``trio.lowlevel.wait_readable`` per arrival, parsers that touch
each byte once.

- ``HTTPPool``: keep-alive connections to one base URL (``http://host:port``), at most
  ``max_connections`` at once; the caller builds the request bytes. Responses are read by
  Content-Length (or chunked); ``Connection: close`` drops the connection.
- The websocket client is in ``wire_ws.py``.

Every network wait of a request or a handshake is bounded by a timeout (``trio.TooSlowError``).
Linux only (epoll), like the rest of bench/.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import trio

TIMEOUT = 30.0
RECEIVE_SIZE = 65536
END_OF_HEAD = b"\r\n\r\n"


class ProtocolError(Exception):
    """The peer sent something this client does not understand."""


class ConnectionClosed(Exception):
    """The peer closed the connection (websocket close frame or end of stream)."""

    def __init__(self, code: int | None = None, reason: str = "") -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason


# What a failed request or connection can raise, for callers that count failures.
NETWORK_ERRORS = (OSError, trio.TooSlowError, ProtocolError, ConnectionClosed)


def host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "ws"):
        raise ValueError(f"only plain http:// and ws:// are supported: {url}")
    return parts.hostname or "127.0.0.1", parts.port or 80


class Connection:
    """A connected non-blocking TCP socket; Trio only for the waits."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()  # received, not consumed yet

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        error: OSError | None = None
        for family, kind, proto, _, address in await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
            trio_sock = trio.socket.socket(family, kind, proto)
            try:
                trio_sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                await trio_sock.connect(address)
            except OSError as failed:  # e.g. "localhost" is ::1 first but the server is on IPv4
                trio_sock.close()
                error = failed
                continue
            except BaseException:
                trio_sock.close()
                raise
            sock = socket.socket(family, kind, proto, fileno=trio_sock.detach())
            sock.setblocking(False)
            return cls(sock)
        raise error or OSError(f"no address for {host}")

    async def send_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[self.sock.send(view):]
            except BlockingIOError:
                await trio.lowlevel.wait_writable(self.sock)

    async def fill(self) -> None:
        """Wait for more bytes into ``buffer`` (callers call it when they expect some)."""
        while True:
            await trio.lowlevel.wait_readable(self.sock)
            try:
                data = self.sock.recv(RECEIVE_SIZE)
            except BlockingIOError:
                continue
            if not data:
                raise ConnectionClosed(None, "end of stream")
            self.buffer += data
            return

    async def until(self, delimiter: bytes) -> bytes:
        """Everything up to and including the delimiter."""
        while (end := self.buffer.find(delimiter)) < 0:
            await self.fill()
        end += len(delimiter)
        head = bytes(self.buffer[:end])
        del self.buffer[:end]
        return head

    async def exactly(self, n: int) -> bytes:
        while len(self.buffer) < n:
            await self.fill()
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        return data

    def close(self) -> None:
        self.sock.close()


def parse_head(head: bytes) -> tuple[int, dict[bytes, bytes]]:
    """Status code and headers (lower-case names) of a response head."""
    lines = head.split(b"\r\n")
    try:
        status = int(lines[0].split(b" ", 2)[1])
    except (IndexError, ValueError):
        raise ProtocolError(f"bad status line {lines[0]!r}") from None
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return status, headers


# ---------------------------------------------------------------------------------------
# HTTP/1.1


class HTTPConnection:
    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.used_at = time.monotonic()
        self.requests = 0

    async def request(self, data: bytes) -> tuple[int, bytes, bool]:
        """Send one complete request; (status, body, keep-alive?)."""
        conn = self.connection
        self.requests += 1
        await conn.send_all(data)
        status, headers = parse_head(await conn.until(END_OF_HEAD))
        if (length := headers.get(b"content-length")) is not None:
            body = await conn.exactly(int(length))
        elif headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            chunks = []
            while size := int((await conn.until(b"\r\n")).split(b";")[0], 16):
                chunks.append((await conn.exactly(size + 2))[:-2])
            await conn.until(b"\r\n")  # no trailers expected: the blank line
            body = b"".join(chunks)
        elif status in (204, 304) or 100 <= status < 200:
            body = b""
        else:
            raise ProtocolError("response without Content-Length")
        self.used_at = time.monotonic()
        return status, body, headers.get(b"connection", b"").lower() != b"close"


class HTTPPool:
    """Keep-alive connections to one base URL, opened on demand up to ``max_connections``.

    ``await pool.request(build)`` calls ``build()`` for the request bytes right before they
    are written (so a timestamp in them is the send time) and returns (status, body), all
    within ``timeout``. A reused connection that the server had closed meanwhile is retried
    once on a new one; connections idle longer than ``max_idle`` (below the server's
    keep-alive timeout) are not reused."""

    def __init__(self, base_url: str, *, max_connections: int = 64, timeout: float = TIMEOUT,
                 max_idle: float = 2.0) -> None:
        self.host, self.port = host_port(base_url)
        self.host_header = f"{self.host}:{self.port}".encode()
        self.max_connections = max_connections
        self.timeout = timeout
        self.max_idle = max_idle
        self.opened = 0
        self._idle: list[HTTPConnection] = []
        self._in_use = 0
        self._waiting = trio.lowlevel.ParkingLot()

    async def _new(self) -> HTTPConnection:
        self.opened += 1
        return HTTPConnection(await Connection.open(self.host, self.port))

    async def request(self, build: Callable[[], bytes]) -> tuple[int, bytes]:
        if self._in_use < self.max_connections:
            self._in_use += 1
        else:
            await self._waiting.park()  # a finishing request hands its slot over
        try:
            with trio.fail_after(self.timeout):
                conn = None
                now = time.monotonic()
                while self._idle and conn is None:
                    conn = self._idle.pop()
                    if now - conn.used_at > self.max_idle:
                        conn.connection.close()
                        conn = None
                conn = conn or await self._new()
                try:
                    try:
                        status, body, keep = await conn.request(build())
                    except (ConnectionClosed, ConnectionError):
                        if conn.requests == 1 or conn.connection.buffer:
                            raise
                        conn.connection.close()  # a stale keep-alive connection: once more
                        conn = await self._new()
                        status, body, keep = await conn.request(build())
                except BaseException:
                    conn.connection.close()
                    raise
            if keep:
                self._idle.append(conn)
            else:
                conn.connection.close()
            return status, body
        finally:
            if self._waiting:
                self._waiting.unpark()
            else:
                self._in_use -= 1

    def close(self) -> None:
        while self._idle:
            self._idle.pop().connection.close()
