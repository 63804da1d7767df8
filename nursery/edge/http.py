"""HTTP/1.1 on one connection: requests parsed by httptools (llhttp, Node.js's parser) and
answered in order, kept alive between requests.

``serve_http`` reads requests off a socket and hands each one to a ``Responder`` (the edge's
routes, or the Quart app behind them); a websocket upgrade hands the socket over for good.
Limits: ``max_body`` bytes of body (413), ``MAX_HEADERS`` headers of ``MAX_HEADER_BYTES`` in all
(431), ``MAX_URL`` bytes of URL (414). Timeouts: an idle keep-alive connection is closed after
``idle_timeout`` seconds, a request must arrive whole within ``request_timeout`` (else 408), a
response must be written within ``send_timeout``.
"""

from __future__ import annotations

import email.utils
import socket
import time
from collections import deque
from collections.abc import Iterable
from typing import Any, Protocol
from urllib.parse import parse_qsl, unquote

import httptools
import trio

MAX_HEADERS = 100
MAX_HEADER_BYTES = 32 * 1024
MAX_URL = 8 * 1024
RECEIVE_BUFFER = 65536

REASONS = {
    100: "Continue", 101: "Switching Protocols", 200: "OK", 201: "Created", 204: "No Content",
    304: "Not Modified", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout", 409: "Conflict",
    413: "Content Too Large", 414: "URI Too Long", 415: "Unsupported Media Type",
    422: "Unprocessable Content", 426: "Upgrade Required", 429: "Too Many Requests",
    431: "Request Header Fields Too Large", 500: "Internal Server Error",
    503: "Service Unavailable",
}


class Request:
    """One request, whole. ``headers`` has lower-case names (repeated ones joined with ", ").
    The handlers fill in ``route`` and ``who`` for the request log."""

    __slots__ = ("method", "raw_path", "path", "query_string", "headers", "body", "client",
                 "http_version", "keep_alive", "upgrade", "route", "who", "request_id", "started",
                 "_args")

    def __init__(
        self,
        method: str,
        raw_path: bytes,
        query_string: bytes,
        headers: dict[str, str],
        body: bytes,
        client: tuple[str, int],
        http_version: str = "1.1",
        keep_alive: bool = True,
        upgrade: bool = False,
    ) -> None:
        self.method = method
        self.raw_path = raw_path
        self.path = unquote(raw_path.decode("ascii", "replace"))
        self.query_string = query_string
        self.headers = headers
        self.body = body
        self.client = client
        self.http_version = http_version
        self.keep_alive = keep_alive
        self.upgrade = upgrade
        self.route: str | None = None  # the route pattern that served it
        self.who: Any = None  # the authenticated principal, if any
        self.request_id = ""
        self.started = 0.0  # perf_counter() when its answer began
        self._args: dict[str, str] | None = None

    @property
    def args(self) -> dict[str, str]:
        """The query string's parameters (the first value of a repeated one)."""
        if self._args is None:
            args: dict[str, str] = {}
            for name, value in parse_qsl(self.query_string.decode("latin-1"), keep_blank_values=True):
                args.setdefault(name, value)
            self._args = args
        return self._args


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

    idle_timeout: float
    request_timeout: float
    send_timeout: float
    max_body: int

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


class _Parsing:
    """httptools' callback target: collects the requests of one connection."""

    __slots__ = ("parser", "client", "max_body", "ready", "_url", "_headers", "_header_bytes",
                 "_body", "_body_size", "started", "refusal", "expects_continue")

    def __init__(self, client: tuple[str, int], max_body: int) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.client = client
        self.max_body = max_body
        self.ready: deque[Request] = deque()
        self.started = False  # a request is partly read
        self.refusal: tuple[int, str, str] | None = None  # (status, code, message): answer, close
        self.expects_continue = False  # the client waits for "100 Continue" before its body
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._header_bytes = 0
        self._body: list[bytes] = []
        self._body_size = 0

    def on_message_begin(self) -> None:
        self.started = True
        self._url, self._headers, self._header_bytes = b"", [], 0
        self._body, self._body_size = [], 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > MAX_URL:
            self._refuse(414, "too_large", f"URLs are limited to {MAX_URL} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        self._header_bytes += len(name) + len(value)
        if len(self._headers) > MAX_HEADERS or self._header_bytes > MAX_HEADER_BYTES:
            self._refuse(431, "too_large", "too many or too large headers")

    def on_headers_complete(self) -> None:
        length = next((v for n, v in self._headers if n.lower() == b"content-length"), None)
        if length is not None and length.isdigit() and int(length) > self.max_body:
            self._refuse(413, "too_large", f"request bodies are limited to {self.max_body} bytes")
        expect = next((v for n, v in self._headers if n.lower() == b"expect"), b"")
        self.expects_continue = expect.lower() == b"100-continue"

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self.max_body:
            self._refuse(413, "too_large", f"request bodies are limited to {self.max_body} bytes")
        self._body.append(body)

    def on_message_complete(self) -> None:
        self.started = False
        parser = self.parser
        url = httptools.parse_url(self._url)
        headers: dict[str, str] = {}
        for raw_name, raw_value in self._headers:
            name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        self.ready.append(Request(
            parser.get_method().decode("ascii", "replace"), url.path or b"/", url.query or b"",
            headers, b"".join(self._body), self.client, parser.get_http_version(),
            parser.should_keep_alive(), parser.should_upgrade(),
        ))

    def unfinished(self) -> Request:
        """The request being read, as far as it is known (to answer it with an error)."""
        try:
            path = httptools.parse_url(self._url).path or b"/"
        except httptools.HttpParserInvalidURLError:
            path = b"/"
        return Request("-", path, b"", {}, b"", self.client, keep_alive=False)

    def _refuse(self, status: int, code: str, message: str) -> None:
        self.refusal = (status, code, message)
        raise _Refused()  # stops the parser (it raises HttpParserCallbackError)


class _Refused(Exception):
    pass


async def serve_http(sock: socket.socket, client: tuple[str, int], edge: Responder) -> Upgrade | None:
    """Answer the requests of one connection until it closes or times out (None), or until
    a websocket upgrade, which is returned unanswered: the caller takes the socket over.
    The caller closes the socket."""
    parsing = _Parsing(client, edge.max_body)
    while True:
        while not parsing.ready:
            timeout = edge.request_timeout if parsing.started else edge.idle_timeout
            with trio.move_on_after(timeout):
                await trio.lowlevel.wait_readable(sock)
                n = _receive(sock)
                if n is None:
                    return None  # the client closed, or the connection broke
                try:
                    parsing.parser.feed_data(memoryview(_received)[:n])
                except httptools.HttpParserUpgrade as upgrading:
                    request = parsing.ready.pop()
                    if parsing.ready or not request.upgrade:
                        return None  # requests pipelined before an upgrade: not served
                    return Upgrade(request, bytes(_received[upgrading.args[0]:n]))
                except httptools.HttpParserError:  # also what a callback's ``_refuse`` raises
                    refusal = parsing.refusal or (400, "malformed", "not a valid HTTP/1.1 request")
                    await _refuse(sock, edge, parsing.unfinished(), *refusal)
                    return None
                if parsing.expects_continue:
                    parsing.expects_continue = False
                    await send_all(sock, b"HTTP/1.1 100 Continue\r\n\r\n")
                continue
            if parsing.started:
                await _refuse(sock, edge, parsing.unfinished(), 408, "timeout",
                              "the request did not arrive in time")
            return None  # idle for too long: closed without a word, as keep-alive allows
        request = parsing.ready.popleft()
        if request.upgrade:
            return Upgrade(request, b"")
        response = await edge.respond(request)
        keep_alive = request.keep_alive and not edge.draining()
        if not await write_response(sock, edge, request, response, keep_alive=keep_alive) or not keep_alive:
            return None


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
    with trio.move_on_after(edge.send_timeout):
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
