"""HTTP/1.1 requests from the bytes of one connection, parsed by httptools (llhttp, Node.js's
parser), with the rules and budgets that reading them obeys. No I/O: ``edge.http`` feeds a
``RequestReader`` what it reads and answers what comes out.

What is refused, and why (RFC 9112 / 9110; as h11 and Hypercorn, or stricter): a missing,
repeated or malformed Host (400), HTTP/0.9 (400), another major version (505), CONNECT or a
method llhttp does not know (501), a Transfer-Encoding other than plain ``chunked`` (501),
HTTP/1.0 with a Transfer-Encoding (400, RFC 9112 §6.1), and the budgets of ``HttpLimits``
(414, 431, 413). Trailers are read, counted and dropped: they never become request headers.
An ``Upgrade`` to anything but a websocket (``h2c``) is ignored and the request read as a
plain one; a websocket upgrade over HTTP/1.0 is not one (RFC 9110 §7.8).
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote

import httptools

# What our routes serve. A method llhttp knows reaches the router, which answers 405 with
# ``Allow`` where a route does not serve it (TRACE, PROPFIND, QUERY); a well-formed method
# llhttp does not know (FOO) is a 501 (RFC 9110 §15.6.2), as Hypercorn answers.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

# RFC 9110 §7.2: uri-host [":" port]; an IP literal, or a reg-name (no spaces, no "@", no "/").
_HOST = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]*)(?::[0-9]*)?")
_RULED = frozenset({b"host", b"transfer-encoding", b"content-length", b"expect"})
# A request line: when llhttp finds no method it knows, a well-formed one is a 501, not a 400.
_VERSIONLESS_LINE = re.compile(rb"(?:\A|\n)[!#$%&'*+.^_`|~0-9A-Za-z-]+ [^ \r\n]+\r?\n")
_REQUEST_LINE = re.compile(rb"(?:\A|\n)([!#$%&'*+.^_`|~0-9A-Za-z-]+) [^ \r\n]+ HTTP/1\.[01]\r\n")

Refusal = tuple[int, str, str]  # (status, code, message): answered, then the connection closed


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """The budgets of one connection (what each bounds: ``edge.http``'s docstring); sizes in
    bytes, times in seconds."""

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
        self, client: tuple[str, int], limits: HttpLimits, clock: Callable[[], float]
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
        self.begun_at = 0.0  # clock() at the partly read request's first byte
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
                if (self.started and not self.head_done and self._version == "0.0"
                        and not self._completed and _VERSIONLESS_LINE.search(chunk)):
                    # An HTTP/0.9 request line: llhttp waits for a head that will never come;
                    # refused now, as h11 does, not at the deadline. (Only in a read where no
                    # request ended: then all of it is this request's line, no body.)
                    self._set_refusal(400, "malformed", "HTTP/0.9 is not supported")

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
        """When the client must have sent more (``clock`` time): the request being read must
        be whole by then, or an idle connection is closed."""
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
