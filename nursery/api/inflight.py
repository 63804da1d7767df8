"""Requests and websockets in progress, so that a graceful shutdown knows when it is done.

Hypercorn waits out its whole graceful timeout when a client holds an idle keep-alive
connection, so the server stops serving as soon as nothing is in flight instead. While
draining, every response says ``Connection: close`` so that clients (and the proxy) stop
reusing connections to this instance.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio
from quart import Quart, Response
from quart.wrappers.base import ClientDisconnectedError


class InFlight:
    def __init__(self) -> None:
        self.count = 0
        self._idle = trio.Event()
        self._idle.set()

    def begin(self) -> None:
        self.count += 1
        self._idle = trio.Event() if self._idle.is_set() else self._idle

    def end(self) -> None:
        self.count -= 1
        if self.count == 0:
            self._idle.set()

    async def wait_idle(self) -> None:
        while self.count:
            await self._idle.wait()


def track_in_flight(app: Quart, in_flight: InFlight, draining: Callable[[], bool]) -> None:
    """Count every HTTP request and websocket from the moment Hypercorn hands it over to
    the moment the app is done with it (an ASGI wrapper: nothing can skip the count)."""
    inner = app.asgi_app

    async def counted(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await inner(scope, receive, send)
            return
        in_flight.begin()
        try:
            await inner(scope, receive, _finishing_shielded(send) if scope["type"] == "http" else send)
        except* ClientDisconnectedError:
            # The client (or the proxy's timed-out health check) left before its answer:
            # Quart-Trio raises this from a nursery, Hypercorn would log it as an app error.
            pass
        finally:
            in_flight.end()

    app.asgi_app = counted  # type: ignore[method-assign]

    @app.after_request
    async def close_while_draining(response: Response) -> Response:
        if draining():
            response.headers["Connection"] = "close"
        return response


def _finishing_shielded(send: Any) -> Any:
    """``send`` whose last message of a response cannot be cancelled.

    When the response is complete but the request body is not (the app answered 401, 404 or
    405 without reading it), Hypercorn closes the connection from inside that last ``send``.
    Quart-Trio cancels the request's nursery as soon as Hypercorn reports the stream closed,
    which cancelled that close half-way: the connection then stayed open forever and the
    next request on it (a keep-alive client's, or the proxy's for another user) hung.
    Hypercorn's socket write is shielded already; this shields the close after it."""

    async def send_shielded_at_end(message: Any) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            with trio.CancelScope(shield=True):
                await send(message)
        else:
            await send(message)

    return send_shielded_at_end
