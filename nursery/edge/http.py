"""HTTP/1.1 on one connection: requests parsed by httptools (llhttp, Node.js's parser) and
answered one at a time, in order, kept alive between requests.

``serve_http`` reads requests off a socket and hands each one to a ``Responder`` (the edge's
routes, or the Quart app behind them); a websocket upgrade hands the socket over for good.

Every cost a client can cause has a budget (``HttpLimits``, from ``nursery.config``):

- bytes: a URL (414), a request's header fields (count and bytes, 431), its body (413). The
  header bytes are a running total of what was read while the head was incomplete, so a line
  that never ends is refused too (httptools only calls back on whole fields and keeps the
  partial one itself); the chunk-size lines, chunk extensions and trailers of a chunked body
  count against the same budget. Trailers are read, counted and dropped: they never become
  request headers.
- time: one deadline per request from its first byte, not a timer restarted by every read:
  the head within ``header_timeout``, then the body at ``body_min_rate`` bytes a second or
  faster (after a first ``header_timeout``), all of it within ``request_timeout`` (else 408
  and close). An idle keep-alive connection is closed after ``idle_timeout``; bytes that start
  no request (blank lines) do not keep it open. A response must be written within
  ``send_timeout``.
- the instance: one checkpoint per request, so a read of thousands of pipelined requests is
  answered without holding the other tasks.

Answers are given strictly in order: a request that breaks the rules after good pipelined ones
is refused (and the connection closed) only after their answers, and ``100 Continue`` is sent
only once the earlier answers are written, never to an HTTP/1.0 client (RFC 9110 §10.1.1).
What is refused, and why (RFC 9112 / 9110; as h11 and Hypercorn, or stricter): a missing,
repeated or malformed Host (400), HTTP/0.9 (400), another major version (505), a method our
routes do not know (501), a Transfer-Encoding other than plain ``chunked`` (501), HTTP/1.0
with a Transfer-Encoding (400, RFC 9112 §6.1). An ``Upgrade`` to anything but a websocket
(``h2c``) is ignored and the request served; a websocket upgrade over HTTP/1.0 is not one.
"""

from __future__ import annotations

import email.utils
import re
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qsl, unquote

import httptools
import trio

RECEIVE_BUFFER = 65536

# What our routes answer; another method is a 501 (``Router`` serves HEAD by GET).
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

REASONS = {
    100: "Continue", 101: "Switching Protocols", 200: "OK", 201: "Created", 204: "No Content",
    304: "Not Modified", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout", 409: "Conflict",
    413: "Content Too Large", 414: "URI Too Long", 415: "Unsupported Media Type",
    422: "Unprocessable Content", 426: "Upgrade Required", 429: "Too Many Requests",
    431: "Request Header Fields Too Large", 500: "Internal Server Error",
    501: "Not Implemented", 503: "Service Unavailable", 505: "HTTP Version Not Supported",
}

# RFC 9110 §7.2: uri-host [":" port]; an IP literal, or a reg-name (no spaces, no "@", no "/").
_HOST = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]*)(?::[0-9]*)?")
_RULED = frozenset({b"host", b"transfer-encoding", b"content-length", b"expect"})
# A request line: when llhttp finds no method it knows, a well-formed one is a 501, not a 400.
_REQUEST_LINE = re.compile(rb"(?:\A|\n)([!#$%&'*+.^_`|~0-9A-Za-z-]+) [^ \r\n]+ HTTP/1\.[01]\r\n")


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """The budgets of one connection (see the module docstring); sizes in bytes, times in
    seconds."""

    max_body: int = 64 * 1024
    max_url: int = 8 * 1024
    max_headers: int = 100
    max_header_bytes: int = 32 * 1024
    header_timeout: float = 10.0
    body_min_rate: int = 1024  # bytes per second
    request_timeout: float = 30.0
    idle_timeout: float = 75.0  # keep-alive: longer than the proxy's own (conf/Caddyfile)
    send_timeout: float = 10.0


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
        self.upgrade = upgrade  # a websocket handshake (HTTP/1.1, Upgrade: websocket)
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


Refusal = tuple[int, str, str]  # (status, code, message): answered, then the connection closed

# One receive buffer for the whole process: whatever is read is parsed before the next read.
_received = bytearray(RECEIVE_BUFFER)


class RequestReader:
    """The requests of one connection, from the bytes it sends (no I/O: ``feed`` them).

    Whole requests queue in ``ready``, in order; the first request that breaks a rule sets
    ``refusal`` and nothing after it is parsed. After a websocket upgrade (the last of
    ``ready``), ``leftover`` holds what the client sent after its handshake.

    The head's bytes are counted by whole reads (the parser does not say where in a read a
    request began): when one request ends and the next begins in the same read, the next one
    is counted from the end of that read. So what httptools holds of a partial line stays
    under ``max_header_bytes`` plus two reads (160 KiB by default), however long the line.
    """

    __slots__ = ("parser", "client", "limits", "ready", "leftover", "refusal", "started",
                 "head_done", "expects_continue", "begun_at", "head_done_at", "_url", "_headers",
                 "_fields", "_field_bytes", "_wire", "_body", "_body_size", "_completed", "_clock")

    def __init__(
        self, client: tuple[str, int], limits: HttpLimits,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.client = client
        self.limits = limits
        self._clock = clock
        self.ready: deque[Request] = deque()
        self.leftover = b""
        self.refusal: Refusal | None = None
        self.started = False  # a request is partly read
        self.head_done = False  # ... and its head is whole (its body is being read)
        self.expects_continue = False  # the client waits for "100 Continue" before its body
        self.begun_at = 0.0  # trio.current_time() of the partly read request's first byte
        self.head_done_at = 0.0
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._fields = 0  # header fields and trailers
        self._field_bytes = 0
        self._wire = 0  # bytes of the current request read so far (by whole reads)
        self._body: list[bytes] = []
        self._body_size = 0
        self._completed = False  # a request ended in the read being parsed

    # -- feeding ----------------------------------------------------------------------------

    def feed(self, data: bytes | memoryview) -> None:
        """Parse ``data`` (what one read gave): whole requests go to ``ready``; a broken rule
        sets ``refusal``. Not to be called again after a refusal or a websocket upgrade."""
        self._completed = False
        pending: bytes | memoryview | None = data
        while pending is not None and self.refusal is None:
            chunk, pending = pending, None
            try:
                self.parser.feed_data(chunk)
            except httptools.HttpParserUpgrade as upgrade:
                pending = self._upgraded(bytes(chunk[upgrade.args[0]:]))
            except httptools.HttpParserInvalidMethodError:
                if any(m.group(1).decode() not in METHODS for m in _REQUEST_LINE.finditer(chunk)):
                    self._set_refusal(501, "not_implemented", "unknown method")
                else:
                    self._set_refusal(400, "malformed", "not a valid HTTP/1.1 request")
            except httptools.HttpParserError as exc:  # also what a callback's ``_refuse`` raises
                if "HTTP version" in str(exc):
                    self._set_refusal(505, "version_not_supported", "HTTP/1.1 and 1.0 only")
                else:
                    self._set_refusal(400, "malformed", "not a valid HTTP/1.1 request")
            else:
                self._count(len(chunk))

    def _count(self, size: int) -> None:
        """Add a read to the running total of the request being read (its head, chunk
        framing and trailers: everything but its body's data)."""
        if not self.started:
            return
        if self._completed:
            self._wire = self._body_size  # it began in this read, after another request
        else:
            self._wire += size
        if self._wire - self._body_size > self.limits.max_header_bytes:
            self._set_refusal(431, "too_large", f"headers are limited to "
                              f"{self.limits.max_header_bytes} bytes")

    def _upgraded(self, leftover: bytes) -> bytes | None:
        """llhttp stops after a request with ``Upgrade``; what to parse next, if anything."""
        request = self.ready[-1]  # CONNECT is refused with its head: this has Upgrade
        upgrade = request.headers.get("upgrade", "").lower()
        if request.http_version == "1.1" and "websocket" in _tokens(upgrade):
            request.upgrade = True
            self.leftover = leftover
            return None
        # Any other protocol (h2c: what `curl --http2` asks for), or a websocket over HTTP/1.0
        # (RFC 9110 §7.8: ignored): the request is served as it is. llhttp has stopped at its
        # head, so a fresh parser reads it again without the upgrade, then its body and what
        # follows.
        self.ready.pop()
        head = self._head_without_upgrade()
        self.parser = httptools.HttpRequestParser(self)
        return head + leftover

    def _head_without_upgrade(self) -> bytes:
        lines = [b"%s %s HTTP/%s" % (self.parser.get_method(), self._url, self._version.encode())]
        for name, value in self._headers:
            lowered = name.lower()
            if lowered == b"upgrade":
                continue
            if lowered == b"connection":
                kept = [t for t in value.split(b",") if t.strip().lower() != b"upgrade"]
                if not kept:
                    continue
                value = b",".join(kept)
            lines.append(name + b": " + value)
        return b"\r\n".join(lines) + b"\r\n\r\n"

    # -- httptools' callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.started, self.head_done = True, False
        self.begun_at = self._clock()
        self._url, self._headers, self._fields, self._field_bytes = b"", [], 0, 0
        self._wire, self._body, self._body_size = 0, [], 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self.limits.max_url:
            self._refuse(414, "too_large", f"URLs are limited to {self.limits.max_url} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._fields += 1
        self._field_bytes += len(name) + len(value) + 4  # ": " and CRLF
        if self._fields > self.limits.max_headers or self._field_bytes > self.limits.max_header_bytes:
            self._refuse(431, "too_large", "too many or too large headers")
        if not self.head_done:  # trailers are counted, then dropped: never headers
            self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.head_done, self.head_done_at = True, self._clock()
        rules: dict[bytes, list[bytes]] = {}  # the headers the rules look at, in one pass
        for name, value in self._headers:
            lowered = name.lower()
            if lowered in _RULED:
                rules.setdefault(lowered, []).append(value.strip(b" \t"))
        refusal = self._head_refusal(rules)
        if refusal is not None:
            self._refuse(*refusal)
        self.expects_continue = (rules.get(b"expect") is not None and self._version == "1.1"
                                 and [v.lower() for v in rules[b"expect"]] == [b"100-continue"])

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self.limits.max_body:
            self._refuse(413, "too_large", f"request bodies are limited to {self.limits.max_body} bytes")
        self._body.append(body)

    def on_message_complete(self) -> None:
        self.started = self.head_done = self.expects_continue = False
        self._completed = True
        parser = self.parser
        url = httptools.parse_url(self._url)
        headers: dict[str, str] = {}
        for raw_name, raw_value in self._headers:
            # llhttp drops the whitespace before a value, not after it (RFC 9110 §5.5: OWS).
            name, value = raw_name.decode("latin-1").lower(), raw_value.strip(b" \t").decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        self.ready.append(Request(
            self._method, url.path or b"/", url.query or b"", headers, b"".join(self._body),
            self.client, parser.get_http_version(), parser.should_keep_alive(),
        ))

    # -- rules ----------------------------------------------------------------------------------

    @property
    def _method(self) -> str:
        return self.parser.get_method().decode("ascii", "replace")

    @property
    def _version(self) -> str:
        return self.parser.get_http_version()

    def _head_refusal(self, rules: dict[bytes, list[bytes]]) -> Refusal | None:
        """Why a whole head is refused, if it is (RFC 9112); ``rules``: the values of the
        headers in ``_RULED``, by lower-case name."""
        version = self._version
        if self.parser.get_method() == b"CONNECT":  # a tunnel: its bytes would follow the head
            return 501, "not_implemented", "CONNECT is not supported"
        if version == "0.9":
            return 400, "malformed", "HTTP/0.9 is not supported"
        if version not in ("1.0", "1.1"):
            return 505, "version_not_supported", "HTTP/1.1 and 1.0 only"
        hosts = rules.get(b"host", [])
        if len(hosts) > 1 or (version == "1.1" and not hosts):
            return 400, "malformed", "exactly one Host header is required"  # §3.2
        if hosts and not _HOST.fullmatch(hosts[0]):
            return 400, "malformed", "the Host header is not a valid host"
        codings = rules.get(b"transfer-encoding")
        if codings and version == "1.0":
            return 400, "malformed", "Transfer-Encoding is not HTTP/1.0"  # §6.1
        if codings and (len(codings) > 1 or codings[0].lower() != b"chunked"):
            return 501, "not_implemented", "only the chunked transfer coding is supported"
        lengths = rules.get(b"content-length")
        if lengths and lengths[0].isdigit() and int(lengths[0]) > self.limits.max_body:
            return 413, "too_large", f"request bodies are limited to {self.limits.max_body} bytes"
        return None

    def unfinished(self) -> Request:
        """The request being read, as far as it is known (to answer it with an error)."""
        try:
            path = httptools.parse_url(self._url).path or b"/"
        except httptools.HttpParserInvalidURLError:
            path = b"/"
        return Request("-", path, b"", {}, b"", self.client, keep_alive=False)

    def _set_refusal(self, status: int, code: str, message: str) -> None:
        if self.refusal is None:
            self.refusal = (status, code, message)

    def _refuse(self, status: int, code: str, message: str) -> None:
        self._set_refusal(status, code, message)
        raise _Refused()  # stops the parser (it raises HttpParserCallbackError)

    # -- time -----------------------------------------------------------------------------------

    def deadline(self, idle_since: float) -> float:
        """When the client must have sent more (trio time): the request being read must be
        whole by then, or an idle connection is closed."""
        limits = self.limits
        if not self.started:
            return idle_since + limits.idle_timeout
        whole = self.begun_at + limits.request_timeout
        if not self.head_done:
            return min(whole, self.begun_at + limits.header_timeout)
        return min(whole, self.head_done_at + limits.header_timeout
                   + self._body_size / limits.body_min_rate)

    def restart_clocks(self, now: float) -> None:
        """The request being read waited for our answers (or for our 100 Continue): its
        time starts now."""
        if self.started:
            self.begun_at = now
            if self.head_done:
                self.head_done_at = now


class _Refused(Exception):
    pass


def _tokens(value: str) -> list[str]:
    return [token.strip() for token in value.split(",")]


async def serve_http(sock: socket.socket, client: tuple[str, int], edge: Responder) -> Upgrade | None:
    """Answer the requests of one connection until it closes or times out (None), or until
    a websocket upgrade, which is returned unanswered: the caller takes the socket over.
    The caller closes the socket."""
    limits = edge.http_limits
    reader = RequestReader(client, limits)
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
    if request.method not in METHODS:
        return edge.error(request, 501, "not_implemented", f"{request.method} is not supported")
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
