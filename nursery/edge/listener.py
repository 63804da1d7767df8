"""The edge: one listening port for everything an instance serves, on Trio.

Every connection gets one task, which reads its HTTP requests (``http.serve_http``) and
answers each from the edge's own routes (``Router``: the REST API) or, for everything else,
from the Quart app (``asgi``: GraphQL over HTTP, the web page, health, metrics). A websocket
upgrade to one of the router's socket paths turns the connection into that endpoint's
session, in the same task, until it closes.

What every response gets is decided here, once (``finish``): the hardening headers and CORS
(``api.security``), ``X-Request-ID``, ``Connection: close`` while draining, the request's
metrics and its access log line.

Shutdown (driven by ``server.py``): ``stop_accepting`` closes the listener; ``wait_idle``
waits until no request is being answered and no websocket is open; cancelling ``serve``
closes what is left (idle keep-alive connections).
"""

from __future__ import annotations

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
from nursery.edge.http import Request, Response, send_all, serve_http, write_response
from nursery.edge.router import Router, SocketRoute
from nursery.edge.websocket import FrameLimits, WebSocket, accept_key
from nursery.errors import NurseryError
from nursery.metrics import Metrics
from nursery.protocol.close_codes import GRAPHQL_SUBPROTOCOL_NOT_ACCEPTABLE

log = logging.getLogger(__name__)

ACCEPT_BATCH = 64  # connections accepted per wake-up of the listener
ACCEPT_RETRY = 0.1  # seconds to wait when out of file descriptors


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
    max_body: int = 64 * 1024
    websocket: FrameLimits = FrameLimits()  # what one websocket's client may cost
    idle_timeout: float = 75.0  # keep-alive: longer than the proxy's own (conf/Caddyfile)
    request_timeout: float = 30.0
    send_timeout: float = 10.0


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
        self.max_body = limits.max_body
        self.idle_timeout = limits.idle_timeout
        self.request_timeout = limits.request_timeout
        self.send_timeout = limits.send_timeout
        self._hardening = hardening
        self._errors = errors
        self._metrics = metrics
        self.draining = draining
        self.in_flight = InFlight()
        self._listener: socket.socket | None = None
        self._server: tuple[str, int] = ("", 0)

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
                    if exc.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                        raise
                    log.warning("cannot accept a connection: %s; retrying", exc.strerror)
                    await trio.sleep(ACCEPT_RETRY)
                    break
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                nursery.start_soon(self._connection, sock, address[:2])

    async def _connection(self, sock: socket.socket, client: tuple[str, int]) -> None:
        try:
            upgrade = await serve_http(sock, client, self)
            if upgrade is not None:
                await self._websocket(sock, upgrade.request, upgrade.leftover)
        except Exception:
            # A bug serving one connection must not take the instance down with it.
            log.exception("a connection failed")
        finally:
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
        sent = False
        with trio.move_on_after(self.send_timeout):
            sent = await send_all(sock, ("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        if sent:
            await self._run_websocket(sock, request, leftover, route, chosen)

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
                    await ws.close(GRAPHQL_SUBPROTOCOL_NOT_ACCEPTABLE, "Subprotocol not acceptable")
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
