"""``SyncClient``: the I/O. The gap-free start of docs/protocol.md (``GET /api/todos``, then
``hello`` with ``since`` = the list's ``rev``), the backlog, live changes, heartbeats, and
reconnects that resume from the last revision applied.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn
from urllib.parse import urlsplit, urlunsplit

import httpx
import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    HandshakeError,
    WebSocketConnection,
    open_websocket_url,
)

from nursery.client.backoff import Backoff, Ending
from nursery.client.errors import ClientError, ProtocolViolation, RequestFailed, SessionEnded, describe
from nursery.client.mirror import Mirror, _int
from nursery.protocol import sync as protocol
from nursery.protocol.close_codes import BAD_MESSAGE, UNAUTHENTICATED

log = logging.getLogger(__name__)


EventCallback = Callable[[dict[str, Any]], None]


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """Every time in seconds. ``ping_interval``: silence after which the client pings;
    ``ping_timeout``: further silence after which the connection counts as dead.

    Memory, besides the mirror and one list read: trio-websocket buffers one received frame
    (its queue size is 1), each at most ``max_message_bytes``; a bigger frame closes the
    connection with 1009 and counts as a failure."""

    backoff_initial: float = 0.1
    backoff_max: float = 10.0
    restart_jitter: float = 0.5
    stable_after: float = 10.0
    connect_timeout: float = 10.0
    close_timeout: float = 2.0
    hello_timeout: float = 5.0
    ping_interval: float = 15.0
    ping_timeout: float = 10.0
    send_timeout: float = 10.0
    http_timeout: float = 10.0
    page_size: int = 200
    max_message_bytes: int = 1024 * 1024


class _Silent(Exception):
    """No frame arrived within ``ping_interval + ping_timeout``: the connection is dead."""


class _Busy(Exception):
    """HTTP 429 or 5xx: try again later (``retry_after`` seconds at least, if the server said)."""

    def __init__(self, status: int, retry_after: float | None) -> None:
        super().__init__(f"HTTP {status}")
        self.retry_after = retry_after


# Errors that end one connection attempt and are retried after a backoff; anything else
# (``SessionEnded``, ``RequestFailed``, ``ProtocolViolation``, bugs) ends ``run``.
RECOVERABLE: tuple[type[BaseException], ...] = (
    ConnectionClosed,
    HandshakeError,
    OSError,
    trio.BrokenResourceError,
    trio.TooSlowError,
    httpx.TransportError,
    _Silent,
    _Busy,
)


def ws_url(base_url: str) -> str:
    """``http://host:port/prefix`` → ``ws://host:port/prefix/ws`` (``https`` → ``wss``)."""
    parts = urlsplit(base_url)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None:
        raise ValueError(f"not an http(s) URL: {base_url!r}")
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + "/ws", "", ""))


def parse_frame(message: str | bytes) -> dict[str, Any]:
    if not isinstance(message, str):
        raise ProtocolViolation("binary frame")
    try:
        frame = json.loads(message)
    except ValueError:
        raise ProtocolViolation(f"not JSON: {message:.200}") from None
    if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
        raise ProtocolViolation(f"not a frame: {message:.200}")
    return frame


async def login(
    base_url: str, email: str, password: str, *, device: str = "python client", timeout: float = 10.0
) -> str:
    """Log in (``POST /api/auth/login``) and return the new session's token.

    Raises ``RequestFailed`` (401: wrong email or password), or httpx's errors on network trouble.
    """
    with trio.fail_after(timeout):
        async with httpx.AsyncClient(timeout=timeout) as http:
            r = await http.post(
                f"{base_url.rstrip('/')}/api/auth/login",
                json={"email": email, "password": password, "device": device},
            )
    if r.status_code != 200:
        raise RequestFailed(r.status_code, _body(r))
    token = r.json().get("token")
    if not isinstance(token, str):
        raise ProtocolViolation("login answered without a token")
    return token


def _body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text[:500]


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return max(0.0, float(response.headers["Retry-After"]))
    except (KeyError, ValueError):
        return None


class SyncClient:
    """Keeps ``mirror`` equal to the server's state of the user that ``token`` belongs to.

    ``base_url`` is one URL or several equivalent instances (no proxy needed): each connection
    attempt takes the next one, round robin. ``on_event(frame)`` is called, in ``run``'s task,
    with every frame from the server after it was handled (``welcome``, ``change``, ``reset``,
    ``presence``, ``session``, ``ping``, ...) and with two frames of the client's own:
    ``{"type": "loaded", "rev": R}`` after a list was read (for a ``reset``: before the
    ``reset`` frame itself is reported) and
    ``{"type": "disconnected", "code": C, "reason": S, "retry_in": SECONDS}``. An exception in
    it ends ``run``. Readable state: ``connected``, ``instance`` and ``session_id`` (from the
    last welcome), ``server_rev`` (the head revision the last welcome announced), ``presence``
    (the last online list), ``welcomes`` (connections made), ``last_ending``.
    """

    def __init__(
        self,
        base_url: str | Sequence[str],
        token: str,
        *,
        mirror: Mirror | None = None,
        on_event: EventCallback | None = None,
        config: ClientConfig = ClientConfig(),
        rng: Callable[[], float] = random.random,
    ) -> None:
        urls = [base_url] if isinstance(base_url, str) else list(base_url)
        if not urls:
            raise ValueError("no base URL")
        self.urls = [url.rstrip("/") for url in urls]
        self.mirror = mirror if mirror is not None else Mirror()
        self.config = config
        self.connected = False
        self.instance: str | None = None
        self.session_id: str | None = None
        self.server_rev: int | None = None
        self.presence: list[str] = []
        self.welcomes = 0
        self.last_ending: Ending | None = None
        self._token = token
        self._on_event = on_event
        self._rng = rng
        self._attempts = 0
        self._welcomed_at: float | None = None
        self._changed = trio.Event()
        self._stopped: BaseException | None = None
        self._task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED

    # -- waiting for state ----------------------------------------------------------------------

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Return once ``predicate()`` holds; it is checked after every change of state.

        Raises ``trio.TooSlowError`` after ``timeout`` seconds (``math.inf``: no limit), and
        ``SessionEnded`` / ``ClientError`` once ``run`` has stopped (the state will not change).
        """
        with trio.fail_after(timeout):
            while not predicate():
                if self._stopped is not None:
                    if isinstance(self._stopped, SessionEnded):
                        raise SessionEnded(str(self._stopped)) from self._stopped
                    raise ClientError("the sync client has stopped") from self._stopped
                await self._changed.wait()

    async def wait_for_rev(self, rev: int, timeout: float = 10.0) -> None:
        """Return once the mirror reflects revision ``rev`` (see ``wait_until``)."""
        await self.wait_until(lambda: self.mirror.rev >= rev, timeout)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _emit(self, frame: dict[str, Any]) -> None:
        self._notify()
        if self._on_event is not None:
            self._on_event(frame)

    # -- the loop -------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> NoReturn:
        """Sync until cancelled or until the server ends the session.

        Reads the list first unless the mirror was ``loaded`` already (then it resumes from
        ``mirror.rev``), then connects; calls ``task_status.started()`` after the first welcome
        (so ``await nursery.start(client.run)`` waits for a live connection, and raises
        ``SessionEnded`` at once for a revoked token). Network trouble is retried forever
        with backoff; it raises ``SessionEnded`` (4001, 401), ``RequestFailed`` or
        ``ProtocolViolation`` (bugs), never returns.

        Resource handling: ``run`` owns one httpx client and at most one websocket at a time,
        both closed when it ends. On cancellation the websocket gets no close handshake unless
        the cancellation leaves it time (the server notices either way).
        """
        self._task_status = task_status
        self._stopped = None
        backoff = Backoff(
            self.config.backoff_initial,
            self.config.backoff_max,
            restart_jitter=self.config.restart_jitter,
            stable_after=self.config.stable_after,
            rng=self._rng,
        )
        try:
            async with httpx.AsyncClient(timeout=self.config.http_timeout) as http:
                while True:
                    ending = await self._attempt(http, self._next_url())
                    if ending.code == UNAUTHENTICATED:
                        raise SessionEnded(f"the server ended the session: {ending.reason}")
                    delay = backoff.delay_after(ending)
                    self.last_ending = ending
                    log.info("disconnected (%s %s); reconnecting in %.2f s",
                             ending.code, ending.reason, delay)
                    self._emit({"type": "disconnected", "code": ending.code,
                                "reason": ending.reason, "retry_in": delay})
                    await trio.sleep(delay)
        except BaseException as exc:
            self._stopped = exc
            self._notify()
            raise

    def _next_url(self) -> str:
        url = self.urls[self._attempts % len(self.urls)]
        self._attempts += 1
        return url

    async def _attempt(self, http: httpx.AsyncClient, base: str) -> Ending:
        """One connection, from (re)reading the list if needed to the end of the websocket."""
        self._welcomed_at = None
        try:
            if not self.mirror.loaded:
                await self._fetch_list(http, base)
            async with open_websocket_url(
                ws_url(base),
                connect_timeout=self.config.connect_timeout,
                disconnect_timeout=self.config.close_timeout,
                max_message_size=self.config.max_message_bytes,
            ) as ws:
                try:
                    await self._converse(ws, http, base)
                except ProtocolViolation as exc:
                    with trio.move_on_after(self.config.close_timeout):
                        await ws.aclose(BAD_MESSAGE, str(exc)[:100])
                    raise
        except ConnectionClosed as exc:
            if exc.reason is None:
                return self._ending(None, "connection closed")
            return self._ending(exc.reason.code, exc.reason.reason or exc.reason.name)
        except _Busy as exc:
            return self._ending(None, str(exc), retry_after=exc.retry_after)
        except ConnectionRejected as exc:
            return self._ending(None, f"{ws_url(base)} answered HTTP {exc.status_code}")
        except HandshakeError as exc:  # its own text is empty: say what the socket said
            return self._ending(None, f"cannot connect to {ws_url(base)}: {describe(exc)}")
        except (OSError, httpx.TransportError) as exc:
            return self._ending(None, f"cannot reach {base}: {describe(exc)}")
        except RECOVERABLE as exc:
            return self._ending(None, describe(exc))
        finally:
            if self.connected:
                self.connected = False
                self._notify()
        raise AssertionError("unreachable: _converse never returns")

    def _ending(self, code: int | None, reason: str, *, retry_after: float | None = None) -> Ending:
        if self._welcomed_at is None:
            return Ending(code, reason, retry_after=retry_after)
        uptime = trio.current_time() - self._welcomed_at
        return Ending(code, reason, welcomed=True, uptime=uptime, retry_after=retry_after)

    async def _converse(self, ws: WebSocketConnection, http: httpx.AsyncClient, base: str) -> NoReturn:
        """hello → welcome → frames until the connection ends (an exception)."""
        await self._send(ws, protocol.hello(self._token, self.mirror.rev))
        with trio.fail_after(self.config.hello_timeout):
            welcome = parse_frame(await ws.get_message())
        self._on_welcome(welcome)
        # Ping only after silence: any frame proves the connection alive, and the server
        # pings on its own schedule. Every wait here is bounded by interval + timeout.
        pinged = False
        while True:
            message: str | bytes | None = None
            with trio.move_on_after(self.config.ping_timeout if pinged else self.config.ping_interval):
                message = await ws.get_message()
            if message is None:
                if pinged:
                    raise _Silent("no answer to ping")
                await self._send(ws, protocol.PING)
                pinged = True
                continue
            pinged = False
            await self._handle(parse_frame(message), ws, http, base)

    def _on_welcome(self, frame: dict[str, Any]) -> None:
        rev = _int(frame.get("rev"))
        if frame["type"] != "welcome" or rev is None:
            raise ProtocolViolation(f"expected a welcome: {frame!r:.200}")
        self.instance = frame.get("instance")
        self.session_id = frame.get("session")
        self.server_rev = rev
        self.connected = True
        self.welcomes += 1
        self._welcomed_at = trio.current_time()
        log.info("connected to %s (rev %d, resuming after %d)", self.instance, rev, self.mirror.rev)
        self._task_status.started()
        self._task_status = trio.TASK_STATUS_IGNORED
        self._emit(frame)

    async def _handle(
        self, frame: dict[str, Any], ws: WebSocketConnection, http: httpx.AsyncClient, base: str
    ) -> None:
        match frame["type"]:
            case "change":
                self.mirror.apply(frame)
            case "reset":
                # Our revision is past the server's retention (or from another history):
                # read the list again. The server goes on live from its head, and the list
                # is read after that, so changes it already reflects are ignored, none lost.
                await self._fetch_list(http, base)
            case "ping":
                await self._send(ws, protocol.PONG)
            case "presence":
                online = frame.get("online")
                self.presence = [s for s in online if isinstance(s, str)] if isinstance(online, list) else []
            case "welcome":
                raise ProtocolViolation("a second welcome")
            # pong, session and unknown types (from a newer server) change no state.
        self._emit(frame)

    async def _send(self, ws: WebSocketConnection, text: str) -> None:
        with trio.fail_after(self.config.send_timeout):
            await ws.send_message(text)

    # -- REST -----------------------------------------------------------------------------------

    async def _fetch_list(self, http: httpx.AsyncClient, base: str) -> None:
        """Read every page of ``GET /api/todos`` into the mirror, at the FIRST page's rev:
        later pages may already reflect newer changes, which the backlog then brings again."""
        items: list[dict[str, Any]] = []
        rev: int | None = None
        cursor: str | None = None
        while True:
            params: dict[str, str | int] = {"limit": self.config.page_size}
            if cursor:
                params["cursor"] = cursor
            page = await self._get_json(http, f"{base}/api/todos", params)
            if rev is None:
                rev = page.get("rev")
            items.extend(page.get("items") or [])
            cursor = page.get("next_cursor")
            if not cursor:
                break
        assert rev is not None
        self.mirror.load(items, rev)
        self._emit({"type": "loaded", "rev": rev})

    async def _get_json(
        self, http: httpx.AsyncClient, url: str, params: dict[str, str | int]
    ) -> dict[str, Any]:
        with trio.fail_after(self.config.http_timeout):
            r = await http.get(url, params=params, headers={"Authorization": f"Bearer {self._token}"})
        if r.status_code == 401:
            raise SessionEnded(f"the server refused the token: {RequestFailed(401, _body(r))}")
        if r.status_code == 429 or r.status_code >= 500:
            raise _Busy(r.status_code, _retry_after(r))
        if r.status_code != 200:
            raise RequestFailed(r.status_code, _body(r))
        body = _body(r)
        if not isinstance(body, dict):
            raise ProtocolViolation(f"GET {url}: not a JSON object")
        return body
