"""The edge's real listener on a real socket, with a tiny router of its own (nothing of the
product, no database): what the HTTP conformance and budget tests talk to, byte for byte.

Routes: ``GET /headers`` answers the request's headers as JSON (what a handler would see),
``POST|PUT /echo`` its body, ``GET /slow`` after ``Edge.slow`` (an event), ``/ws`` is a
websocket that echoes. Everything else goes to a fallback ASGI app that answers 404.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from nursery.edge import Edge, EdgeLimits, Request, Response, Router, SocketOutcome
from nursery.edge.websocket import WebSocket
from nursery.errors import NurseryError
from nursery.metrics import Metrics
from nursery.ports import listen
from nursery.protocol.close_codes import TransportClosed


class _Hardening:
    def preflight(self, request: Request) -> Response | None:
        return None

    def apply(self, request: Request, response: Response) -> None:
        pass


class _Errors:
    def error(self, request: Request, status: int, code: str, message: str) -> Response:
        body = json.dumps({"error": {"code": code, "message": message}}).encode()
        return Response(status, body, [("content-type", "application/json")])

    def response_for(self, error: NurseryError) -> Response:
        return Response(500)


async def _fallback(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    await receive()
    await send({"type": "http.response.start", "status": 404, "headers": []})
    await send({"type": "http.response.body", "body": b"not here"})


@dataclass
class Served:
    """A running edge: where it listens, and what its handlers saw."""

    host: str
    port: int
    edge: Edge
    answered: list[str] = field(default_factory=list)  # "METHOD path" in the order answered
    release_slow: trio.Event = field(default_factory=trio.Event)

    async def connect(self) -> trio.SocketStream:
        return await trio.open_tcp_stream(self.host, self.port)


def _router(served: list[Served]) -> Router:
    router = Router()

    def note(request: Request) -> None:
        served[0].answered.append(f"{request.method} {request.path}")

    @router.get("/headers")
    async def headers(request: Request) -> Response:
        note(request)
        return Response(200, json.dumps(request.headers).encode(), [("content-type", "application/json")])

    async def echo(request: Request) -> Response:
        note(request)
        return Response(200, request.body)

    router.route("POST", "/echo")(echo)
    router.route("PUT", "/echo")(echo)

    @router.get("/slow")
    async def slow(request: Request) -> Response:
        await served[0].release_slow.wait()
        note(request)
        return Response(200, b"slow")

    @router.websocket("/ws")
    async def ws(request: Request, sock: WebSocket) -> SocketOutcome:
        try:
            message = await sock.receive()
            sock.send(message)
            await sock.drain()
        except TransportClosed:
            return SocketOutcome(None, "", 0, 0)
        return SocketOutcome(1000, "", 1, 1)

    return router


DEFAULTS = EdgeLimits()


async def start_edge(nursery: trio.Nursery, limits: EdgeLimits = DEFAULTS) -> Served:
    """An edge listening on a free loopback port, served until ``nursery`` is cancelled."""
    holder: list[Served] = []
    edge = Edge(_router(holder), _fallback, limits=limits, hardening=_Hardening(),
                errors=_Errors(), metrics=Metrics(), draining=lambda: False)
    listener: socket.socket = listen("127.0.0.1", 0)
    host, port = listener.getsockname()[:2]
    holder.append(Served(host, port, edge))
    await nursery.start(edge.serve, listener)
    return holder[0]


async def exchange(served: Served, data: bytes, *, until_closed: bool = True) -> bytes:
    """Send ``data`` in one write and read what comes back until the server closes (or, with
    ``until_closed`` False, until one whole response is in)."""
    stream = await served.connect()
    try:
        await stream.send_all(data)
        return await read_until(stream, closed=until_closed)
    finally:
        await stream.aclose()


async def read_until(stream: trio.SocketStream, *, closed: bool = True, responses: int = 1,
                     timeout: float = 5) -> bytes:
    """What the server sends: until it closes, or until ``responses`` whole responses."""
    received = b""
    with trio.fail_after(timeout):
        while closed or len(split_responses(received)) < responses:
            try:
                chunk = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                chunk = b""
            if not chunk:
                if closed:
                    return received
                raise AssertionError(f"closed after {received[:200]!r}")
            received += chunk
    return received


def split_responses(data: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """The whole responses in ``data``: (status, headers, body), in order."""
    return _split(data)[0]


def unparsed(data: bytes) -> bytes:
    """What follows the whole responses in ``data`` (a half-written one)."""
    return _split(data)[1]


def _split(data: bytes) -> tuple[list[tuple[int, dict[str, str], bytes]], bytes]:
    out = []
    while b"\r\n\r\n" in data:
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        if len(rest) < length:
            break
        out.append((status, headers, rest[:length]))
        data = rest[length:]
    return out, data


def statuses(data: bytes) -> list[int]:
    return [status for status, _, _ in split_responses(data)]
