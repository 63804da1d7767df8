"""HTTP/1.1 on one connection: requests read by ``reader.RequestReader`` (httptools) and
answered one at a time, in order, kept alive between requests.

``serve_http`` reads requests off a socket and hands each one to a ``Responder`` (the edge's
routes, or the Quart app behind them); a websocket upgrade hands the socket over for good.

Every cost a client can cause has a budget (``HttpLimits``, from ``nursery.config``):

- bytes: a URL (414), a request's header fields (count and bytes, 431), its body (413). The
  header bytes are a running total of what was read while the head was incomplete, so a line
  that never ends is refused too (httptools only calls back on whole fields and keeps the
  partial one itself); the chunk-size lines, chunk extensions and trailers of a chunked body
  count against the same budget.
- time: one deadline per request from its first byte, not a timer restarted by every read:
  the head within ``header_timeout``, then the body at ``body_min_rate`` bytes a second or
  faster (after a first ``header_timeout``), all of it within ``request_timeout`` (else 408
  and close). An idle keep-alive connection is closed after ``idle_timeout``; bytes that start
  no request (blank lines) do not keep it open. A response must be written within
  ``send_timeout``.
- the instance: a checkpoint per request, so a read of thousands of pipelined requests is
  answered without holding the other tasks.

Answers are given strictly in order: a request that breaks the rules after good pipelined ones
is refused (and the connection closed) only after their answers, and ``100 Continue`` is sent
only once the earlier answers are written, never to an HTTP/1.0 client (RFC 9110 §10.1.1).
What is refused, and why: ``edge.reader``; a method our routes do not serve is a 501 here.
"""

from __future__ import annotations

import email.utils
import socket
import time
from collections.abc import Iterable
from typing import Protocol

import trio

from nursery.edge.reader import HttpLimits as HttpLimits
from nursery.edge.reader import Request as Request
from nursery.edge.reader import RequestReader

RECEIVE_BUFFER = 65536

REASONS = {
    100: "Continue", 101: "Switching Protocols", 200: "OK", 201: "Created", 204: "No Content",
    304: "Not Modified", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout", 409: "Conflict",
    413: "Content Too Large", 414: "URI Too Long", 415: "Unsupported Media Type",
    422: "Unprocessable Content", 426: "Upgrade Required", 429: "Too Many Requests",
    431: "Request Header Fields Too Large", 500: "Internal Server Error",
    501: "Not Implemented", 503: "Service Unavailable", 505: "HTTP Version Not Supported",
}


class Response:
    __slots__ = ("status", "body", "headers")

    def __init__(
        self, status: int = 200, body: bytes = b"", headers: Iterable[tuple[str, str]] = ()
    ) -> None:
        self.status = status
        self.body = body
        self.headers = list(headers)

    def header(self, name: str) -> str | None:
        lower = name.lower()
        return next((v for n, v in self.headers if n.lower() == lower), None)

    def set_default(self, name: str, value: str) -> None:
        if self.header(name) is None:
            self.headers.append((name, value))


class Responder(Protocol):
    """What answers requests on a connection (the edge)."""

    http_limits: HttpLimits

    def draining(self) -> bool: ...

    async def respond(self, request: Request) -> Response:
        """The response; never raises for a request (errors become error responses)."""

    def error(self, request: Request, status: int, code: str, message: str) -> Response:
        """A response in the API's error shape."""

    def finish(self, request: Request, response: Response) -> None:
        """Headers every response gets, the request log and metrics."""


class Upgrade:
    """A websocket upgrade request, and what the client sent after it."""

    __slots__ = ("request", "leftover")

    def __init__(self, request: Request, leftover: bytes) -> None:
        self.request = request
        self.leftover = leftover


# One receive buffer for the whole process: whatever is read is parsed before the next read.
_received = bytearray(RECEIVE_BUFFER)


async def serve_http(sock: socket.socket, client: tuple[str, int], edge: Responder) -> Upgrade | None:
    """Answer the requests of one connection until it closes or times out (None), or until
    a websocket upgrade, which is returned unanswered: the caller takes the socket over.
    The caller closes the socket."""
    limits = edge.http_limits
    reader = RequestReader(client, limits, trio.current_time)
    idle_since = trio.current_time()
    while True:
        first = True  # the first request of a read comes after a checkpoint (the wait)
        while reader.ready:
            request = reader.ready.popleft()
            if request.upgrade:
                return Upgrade(request, reader.leftover)
            # One request at a time, each after a checkpoint: one read of thousands of
            # pipelined requests must not hold every other task of the instance.
            if not first:
                await trio.lowlevel.checkpoint()
            first = False
            response = await _answer(edge, request)
            keep_alive = request.keep_alive and not edge.draining()
            written = await write_response(sock, edge, request, response, keep_alive=keep_alive)
            if not written or not keep_alive:
                return None
            idle_since = trio.current_time()
            reader.restart_clocks(idle_since)
        if reader.refusal is not None:  # after the answers to the requests before it
            await _refuse(sock, edge, reader.unfinished(), *reader.refusal)
            return None
        if reader.expects_continue:  # the earlier answers are written: it may send its body
            reader.expects_continue = False
            with trio.move_on_after(limits.send_timeout):
                if not await send_all(sock, b"HTTP/1.1 100 Continue\r\n\r\n"):
                    return None
            reader.restart_clocks(trio.current_time())
        with trio.move_on_at(reader.deadline(idle_since)):
            await trio.lowlevel.wait_readable(sock)
            n = _receive(sock)
            if n is None:
                return None  # the client closed, or the connection broke
            reader.feed(memoryview(_received)[:n])
            continue
        if reader.started:
            await _refuse(sock, edge, reader.unfinished(), 408, "timeout",
                          "the request did not arrive in time")
        return None  # idle for too long: closed without a word, as keep-alive allows


async def _answer(edge: Responder, request: Request) -> Response:
    return await edge.respond(request)


def _receive(sock: socket.socket) -> int | None:
    try:
        n = sock.recv_into(_received)
    except BlockingIOError:
        return 0
    except OSError:
        return None
    return n or None


async def _refuse(
    sock: socket.socket, edge: Responder, request: Request, status: int, code: str, message: str
) -> None:
    """Answer a request that could not be read whole, and close."""
    await write_response(sock, edge, request, edge.error(request, status, code, message),
                         keep_alive=False)


async def write_response(
    sock: socket.socket, edge: Responder, request: Request, response: Response, *,
    keep_alive: bool,
) -> bool:
    """Write the response whole within ``send_timeout``; False if the client is gone."""
    edge.finish(request, response)
    head = [f"HTTP/1.1 {response.status} {REASONS.get(response.status, 'Unknown')}\r\n"]
    for name, value in response.headers:
        head.append(f"{name}: {value}\r\n")
    body = b"" if request.method == "HEAD" else response.body
    if response.status >= 200 and response.status not in (204, 304):
        head.append(f"content-length: {len(response.body)}\r\n")
    head.append(f"date: {_date()}\r\n")
    if not keep_alive:
        head.append("connection: close\r\n")
    elif request.http_version == "1.0":
        head.append("connection: keep-alive\r\n")
    data = "".join(head).encode("latin-1") + b"\r\n" + body
    with trio.move_on_after(edge.http_limits.send_timeout):
        return await send_all(sock, data)
    return False


async def send_all(sock: socket.socket, data: bytes) -> bool:
    """Write all of ``data``; False if the connection broke."""
    view = memoryview(data)
    while view:
        try:
            sent = sock.send(view)
        except BlockingIOError:
            await trio.lowlevel.wait_writable(sock)
            continue
        except OSError:
            return False
        view = view[sent:]
    return True


_date_cache: tuple[int, str] = (0, "")


def _date() -> str:
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, email.utils.formatdate(now, usegmt=True))
    return _date_cache[1]
