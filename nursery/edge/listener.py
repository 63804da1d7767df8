"""The edge: one listening port for everything an instance serves, on Trio.

Every connection gets one task, which reads its HTTP requests (``http.serve_http``) and
answers each by its route in one table (``Router``): the edge's own handlers (REST, health) or
the Quart app's routes, passed on (``asgi``: GraphQL over HTTP, the web page, metrics); a path
no route claims goes to the app too, for its 404. A websocket
upgrade to one of the router's socket paths turns the connection into that endpoint's
session, in the same task, until it closes.

What every response gets is decided here, once (``finish``): the hardening headers and CORS
(``api.security``), ``X-Request-ID``, ``Connection: close`` while draining, the request's
metrics and its access log line.

Accepting is bounded too: a peer address over ``EdgeLimits.connections_per_client`` open
connections gets a 429 and a close before anything is read (never the ``uncapped_peers``);
behind a trusted proxy the same cap counts each client's open websockets by the address the
proxy saw, refused with a 429 instead of the 101 (``peers``: why there). And when the process
is out of file descriptors the listener backs off (0.1 s doubling to 2 s) and says so at most
once a minute instead of spinning.

Shutdown (driven by ``server.py``): ``stop_accepting`` closes the listener; ``wait_idle``
waits until no request is being answered and no websocket is open; cancelling ``serve``
closes what is left (idle keep-alive connections).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import trio

from nursery import logs
from nursery.edge import asgi
from nursery.edge.http import HttpLimits, Request, Response, send_all, serve_http, write_response
from nursery.edge.peers import LOOPBACK, AddressCounts, IPNetwork, client_address
from nursery.edge.router import Router, SocketRoute
from nursery.edge.websocket import FrameLimits, WebSocket, accept_key
from nursery.errors import NurseryError
from nursery.metrics import Metrics

log = logging.getLogger(__name__)

ACCEPT_BATCH = 64  # connections accepted per wake-up of the listener
# Out of file descriptors: wait before accepting again, twice as long each time (up to
# ACCEPT_BACKOFF_MAX), and say so at most every ACCEPT_LOG_PERIOD seconds.
ACCEPT_RETRY = 0.1
ACCEPT_BACKOFF_MAX = 2.0
ACCEPT_LOG_PERIOD = 60.0
# A connection over its address's cap gets a short answer, then this long to read it; at
# most REFUSALS_LINGERING at once (a flood of them must not hold the fds the cap protects).
REFUSAL_LINGER = 1.0
REFUSALS_LINGERING = 64
RECEIVE_DRAIN = 4096
_OUT_OF_FDS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


_TOO_MANY_CONNECTIONS_BODY = (
    b'{"error": {"code": "too_many_connections", "message": "too many open connections from '
    b'this address", "details": null}}'
)
TOO_MANY_CONNECTIONS = (
    b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\n"
    b"retry-after: 1\r\nconnection: close\r\ncontent-length: "
    + str(len(_TOO_MANY_CONNECTIONS_BODY)).encode() + b"\r\n\r\n" + _TOO_MANY_CONNECTIONS_BODY
)


class Hardening(Protocol):
    """What every response gets (``api.security.Hardening``)."""

    def preflight(self, request: Request) -> Response | None:
        """The answer to a CORS preflight, if ``request`` is one."""

    def apply(self, request: Request, response: Response) -> None: ...


class ErrorShape(Protocol):
    """How errors look to clients (``api.errors``)."""

    def error(self, request: Request, status: int, code: str, message: str) -> Response: ...

    def response_for(self, error: NurseryError) -> Response: ...


@dataclass(frozen=True, slots=True)
class EdgeLimits:
    http: HttpLimits = HttpLimits()
    websocket: FrameLimits = FrameLimits()  # what one websocket's client may cost
    # Open connections per client address (None: no cap): counted at accept on the socket's
    # peer; with ``trust_proxy_headers`` (every connection is the proxy's), open websockets
    # per address the proxy saw instead. Addresses in ``uncapped_peers`` (the proxy, load
    # generators on the same host) are never capped.
    connections_per_client: int | None = 256
    uncapped_peers: tuple[IPNetwork, ...] = LOOPBACK
    trust_proxy_headers: bool = False


class InFlight:
    """Requests being answered and websockets open, so that shutdown knows when it is done."""

    def __init__(self) -> None:
        self.count = 0
        self._idle = trio.Event()
        self._idle.set()

    def begin(self) -> None:
        self.count += 1
        if self._idle.is_set():
            self._idle = trio.Event()

    def end(self) -> None:
        self.count -= 1
        if not self.count:
            self._idle.set()

    async def wait_idle(self) -> None:
        while self.count:
            await self._idle.wait()


class Edge:
    def __init__(
        self,
        router: Router,
        app: asgi.ASGIApp,
        *,
        limits: EdgeLimits,
        hardening: Hardening,
        errors: ErrorShape,
        metrics: Metrics,
        draining: Callable[[], bool],
    ) -> None:
        self.router = router
        self._app = app
        self._limits = limits
        self.http_limits = limits.http
        self.send_timeout = limits.http.send_timeout
        self._hardening = hardening
        self._errors = errors
        self._metrics = metrics
        self.draining = draining
        self.in_flight = InFlight()
        self._listener: socket.socket | None = None
        self._server: tuple[str, int] = ("", 0)
        # Open connections per peer address, counted at accept (clients connect directly);
        # behind a trusted proxy, open websockets per address the proxy saw.
        cap = limits.connections_per_client
        self._per_peer = AddressCounts(None if limits.trust_proxy_headers else cap, limits.uncapped_peers)
        self._websockets_per_client = AddressCounts(
            cap if limits.trust_proxy_headers else None, limits.uncapped_peers)
        self._refused_connections = 0  # since last logged
        self._refusals_logged_at = -ACCEPT_LOG_PERIOD
        self._lingering = 0  # refused connections being answered

    # -- lifetime -------------------------------------------------------------------------------

    async def serve(
        self, listener: socket.socket, *,
        task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Start the app, then serve on ``listener`` (``ports.listen``) until cancelled;
        ``task_status.started`` with the URL served once connections are accepted. Closes
        the listener."""
        self._listener = listener
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(asgi.serve_lifespan, self._app)
                host, port = listener.getsockname()[:2]
                self._server = (host, port)
                shown = f"[{host}]" if ":" in host else host
                task_status.started([f"http://{shown}:{port}"])
                await self._accept(listener, nursery)
                await trio.sleep_forever()  # the connections go on until the owner cancels
        finally:
            self.stop_accepting()

    def stop_accepting(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            trio.lowlevel.notify_closing(listener)
            listener.close()

    async def wait_idle(self) -> None:
        await self.in_flight.wait_idle()

    async def _accept(self, listener: socket.socket, nursery: trio.Nursery) -> None:
        backoff = ACCEPT_RETRY
        failures, logged_at = 0, -ACCEPT_LOG_PERIOD
        while self._listener is listener:
            try:
                await trio.lowlevel.wait_readable(listener)
            except trio.ClosedResourceError:
                return  # stop_accepting
            for _ in range(ACCEPT_BATCH):
                try:
                    sock, address = listener.accept()
                except BlockingIOError:
                    break
                except OSError as exc:
                    if exc.errno not in _OUT_OF_FDS:
                        raise
                    # Waiting connections stay in the backlog; the ones we serve end meanwhile.
                    failures += 1
                    if trio.current_time() - logged_at >= ACCEPT_LOG_PERIOD:
                        log.warning("cannot accept connections: %s (%d times since last said); "
                                    "retrying in %.1f s", exc.strerror, failures, backoff)
                        failures, logged_at = 0, trio.current_time()
                    await trio.sleep(backoff)
                    backoff = min(backoff * 2, ACCEPT_BACKOFF_MAX)
                    break
                backoff = ACCEPT_RETRY
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                host = address[0]
                if not self._per_peer.admit(host):
                    self._refuse_connection(sock, nursery)
                    continue
                nursery.start_soon(self._connection, sock, address[:2])

    def _refuse_connection(self, sock: socket.socket, nursery: trio.Nursery) -> None:
        """429 to a connection over its address's cap, then close: no request is read."""
        self._refused_connections += 1
        now = trio.current_time()
        if now - self._refusals_logged_at >= ACCEPT_LOG_PERIOD:
            log.warning("refused %d connections over NURSERY_HTTP_CONNECTIONS_PER_CLIENT",
                        self._refused_connections)
            self._refused_connections, self._refusals_logged_at = 0, now
        if self._lingering < REFUSALS_LINGERING:
            self._lingering += 1
            nursery.start_soon(self._linger, sock)
            return
        with contextlib.suppress(OSError):
            sock.send(TOO_MANY_CONNECTIONS)  # a few hundred bytes: the empty buffer takes them
        sock.close()

    async def _linger(self, sock: socket.socket) -> None:
        """Write the refusal, half-close, and read what the client sent for up to
        ``REFUSAL_LINGER``: a close with its request unread would reset the connection, and
        the client might never see the answer."""
        try:
            with trio.move_on_after(REFUSAL_LINGER):
                if await send_all(sock, TOO_MANY_CONNECTIONS):
                    sock.shutdown(socket.SHUT_WR)
                    while True:
                        await trio.lowlevel.wait_readable(sock)
                        if not sock.recv(RECEIVE_DRAIN):
                            break
        except OSError:
            pass
        finally:
            self._lingering -= 1
            trio.lowlevel.notify_closing(sock)
            sock.close()

    async def _connection(self, sock: socket.socket, client: tuple[str, int]) -> None:
        try:
            upgrade = await serve_http(sock, client, self)
            if upgrade is not None:
                await self._websocket(sock, upgrade.request, upgrade.leftover)
        except Exception:
            # A bug serving one connection must not take the instance down with it.
            log.exception("a connection failed")
        finally:
            self._per_peer.release(client[0])
            trio.lowlevel.notify_closing(sock)
            sock.close()

    # -- HTTP -----------------------------------------------------------------------------------

    async def respond(self, request: Request) -> Response:
        self.in_flight.begin()
        request.request_id = logs.new_request_id(request.headers.get("x-request-id"))
        logs.request_id.set(request.request_id)
        request.started = time.perf_counter()
        try:
            preflight = self._hardening.preflight(request)
            if preflight is not None:
                return preflight
            match = self.router.match(request.method, request.path)
            if match is None:
                socket_route = self.router.socket(request.path)
                if socket_route is not None and not socket_route.plain_http:
                    request.route = request.path
                    return self.error(request, 426, "upgrade_required", "this path is a websocket")
                return await asgi.respond(self._app, request, self._server)
            request.route = match.pattern
            if match.handler is None:
                response = self.error(request, 405, "method_not_allowed", "method not allowed")
                response.headers.append(("allow", ", ".join(match.allowed)))
                return response
            return await match.handler(request, **match.params)
        except NurseryError as exc:
            return self._errors.response_for(exc)
        except Exception:
            log.exception("unexpected error answering %s %s", request.method, request.path)
            return self.error(request, 500, "internal", "something went wrong on our side")
        finally:
            self.in_flight.end()

    def error(self, request: Request, status: int, code: str, message: str) -> Response:
        return self._errors.error(request, status, code, message)

    def finish(self, request: Request, response: Response) -> None:
        self._hardening.apply(request, response)
        if request.request_id:
            response.headers.append(("x-request-id", request.request_id))
        route = request.route or "unmatched"
        seconds = time.perf_counter() - request.started if request.started else 0.0
        self._metrics.http(route, request.method, response.status, seconds)
        logs.http(request.method, route, request.path, response.status, seconds, request.who)

    # -- websockets -----------------------------------------------------------------------------

    async def _websocket(self, sock: socket.socket, request: Request, leftover: bytes) -> None:
        request.request_id = logs.new_request_id(request.headers.get("x-request-id"))
        logs.request_id.set(request.request_id)
        request.route, request.started = request.path, time.perf_counter()
        route = self.router.socket(request.path)
        refusal = _handshake_refusal(request) if route is not None else (
            404, "not_found", "no websocket here")
        if route is None or refusal is not None:
            assert refusal is not None
            response = self.error(request, *refusal)
            if refusal[0] == 426:
                response.headers.append(("sec-websocket-version", "13"))
            with trio.move_on_after(self.send_timeout):
                await write_response(sock, self, request, response, keep_alive=False)
            return
        offered = [p.strip() for p in request.headers.get("sec-websocket-protocol", "").split(",")]
        chosen = route.subprotocol if route.subprotocol in offered else None
        head = ["HTTP/1.1 101 Switching Protocols", "upgrade: websocket", "connection: Upgrade",
                f"sec-websocket-accept: {accept_key(request.headers['sec-websocket-key'])}"]
        if chosen is not None:
            head.append(f"sec-websocket-protocol: {chosen}")
        address = client_address(request.headers.get("x-forwarded-for"), request.client[0],
                                 self._limits.trust_proxy_headers)
        if not self._websockets_per_client.admit(address):
            response = self.error(request, 429, "too_many_connections",
                                  "too many open connections from this address")
            with trio.move_on_after(self.send_timeout):
                await write_response(sock, self, request, response, keep_alive=False)
            return
        try:
            sent = False
            with trio.move_on_after(self.send_timeout):
                sent = await send_all(sock, ("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
            if sent:
                await self._run_websocket(sock, request, leftover, route, chosen)
        finally:
            self._websockets_per_client.release(address)

    async def _run_websocket(
        self, sock: socket.socket, request: Request, leftover: bytes, route: SocketRoute,
        chosen: str | None,
    ) -> None:
        ws = WebSocket(sock, limits=self._limits.websocket, leftover=leftover)
        # A socket may live for days: it keeps only the header its session may read.
        request.headers = {k: v for k, v in request.headers.items() if k == "x-forwarded-for"}
        started = time.perf_counter()
        self.in_flight.begin()
        try:
            if route.subprotocol is not None and chosen is None:
                with trio.move_on_after(self.send_timeout):
                    await ws.close(route.unacceptable_code, "Subprotocol not acceptable")
                outcome = None
            else:
                outcome = await route.handler(request, ws)
        finally:
            self.in_flight.end()
        if outcome is not None:
            logs.websocket(request.path, outcome.code, outcome.reason, time.perf_counter() - started,
                           outcome.frames_in, outcome.frames_out, request.who)


def _handshake_refusal(request: Request) -> tuple[int, str, str] | None:
    """Why an upgrade request is not a valid websocket handshake (RFC 6455 4.2.1), if it is not."""
    headers = request.headers
    if request.method != "GET" or headers.get("upgrade", "").lower() != "websocket":
        return 400, "malformed", "not a websocket handshake"
    if headers.get("sec-websocket-version") != "13":
        return 426, "upgrade_required", "only websocket version 13 is supported"
    try:
        accept_key(headers.get("sec-websocket-key", ""))
    except ValueError as exc:
        return 400, "malformed", str(exc)
    return None
