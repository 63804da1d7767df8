"""What the edge does not serve itself goes to an ASGI application (the Quart app): HTTP
requests only (websockets never reach it), one whole request in, one whole response out.

``serve_lifespan`` runs the application's lifespan (startup before the first request,
shutdown when cancelled); ``respond`` answers one request through it; ``passed_on`` is a
router handler that does, so that the application's routes stand in the edge's one table
(matched, named in the metrics and the log, 405'd there like the edge's own).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import trio

from nursery.edge.http import Request, Response

log = logging.getLogger(__name__)

Message = MutableMapping[str, Any]
# (scope, receive, send): loosely typed, as frameworks type their own scopes and messages.
ASGIApp = Callable[..., Awaitable[None]]

LIFESPAN_TIMEOUT = 10.0


class LifespanFailed(Exception):
    pass


async def serve_lifespan(
    app: ASGIApp, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Start the application (``task_status.started`` once it is), run until cancelled, then
    shut it down (shielded, bounded by ``LIFESPAN_TIMEOUT``). Raises ``LifespanFailed`` when
    the application refuses to start."""
    stop = trio.Event()
    started = trio.Event()
    stopped = trio.Event()
    failure: list[str] = []
    opened = False

    async def receive() -> Message:
        nonlocal opened
        if not opened:
            opened = True
            return {"type": "lifespan.startup"}
        await stop.wait()
        return {"type": "lifespan.shutdown"}

    async def send(message: Message) -> None:
        kind = message["type"]
        if kind == "lifespan.startup.failed":
            failure.append(message.get("message", ""))
        if kind.startswith("lifespan.startup"):
            started.set()
        elif kind.startswith("lifespan.shutdown"):
            stopped.set()

    # The application runs shielded, so that it can still shut down while we are cancelled;
    # it is cancelled once it has (or after LIFESPAN_TIMEOUT).
    app_scope = trio.CancelScope(shield=True)

    async def run_app() -> None:
        with app_scope:
            scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"},
                     "state": {}}
            await app(scope, receive, send)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_app)
        try:
            with trio.fail_after(LIFESPAN_TIMEOUT):
                await started.wait()
            if failure:
                raise LifespanFailed(f"the application did not start: {failure[0]}")
            task_status.started()
            await trio.sleep_forever()
        finally:
            stop.set()
            with trio.CancelScope(shield=True), trio.move_on_after(LIFESPAN_TIMEOUT):
                await stopped.wait()
            app_scope.cancel()


def passed_on(app: ASGIApp) -> Callable[..., Awaitable[Response]]:
    """A route handler that answers from ``app`` (the route's parameters are the app's to read
    again from the path)."""
    async def handler(request: Request, **params: str) -> Response:
        return await respond(app, request)

    return handler


async def respond(app: ASGIApp, request: Request, server: tuple[str, int] | None = None) -> Response:
    """The application's response to ``request`` (buffered whole: ours are small). ``server``:
    the listening address, if known (ASGI allows None; the Host header names it anyway)."""
    headers = [(name.encode("latin-1"), value.encode("latin-1"))
               for name, value in request.headers.items()]
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": request.http_version,
        "method": request.method,
        "scheme": "http",
        "path": request.path,
        "raw_path": request.raw_path,
        "query_string": request.query_string,
        "root_path": "",
        "headers": headers,
        "client": request.client,
        "server": server,
        "extensions": {},
    }
    response = Response(500)
    body: list[bytes] = []
    delivered = False

    async def receive() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": request.body, "more_body": False}
        await trio.sleep_forever()  # the app listens for a disconnect: none comes while it works
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            response.status = message["status"]
            response.headers = [(n.decode("latin-1"), v.decode("latin-1"))
                                for n, v in message.get("headers", [])]
        elif message["type"] == "http.response.body":
            body.append(message.get("body", b""))

    await app(scope, receive, send)
    response.body = b"".join(body)
    # The edge sets these itself, once.
    response.headers = [(n, v) for n, v in response.headers
                        if n.lower() not in ("content-length", "connection", "date")]
    return response
