"""A websocket echo endpoint served by the edge's own listener and codec, and nothing of the
product: what the conformance tests and the Autobahn TestSuite talk to. Also a raw client
that sends exact bytes and reads the server's frames as they are.

    python -m tests.edge.echo --port 9001 --max-message 16777216 --max-fragments 300000

serves it alone (``--help``: the budgets), for running wstest by hand.
"""

from __future__ import annotations

import argparse
import base64
import os
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio

from nursery import ports
from nursery.edge import Edge, EdgeLimits, Request, Response, Router, SocketOutcome
from nursery.edge.websocket import FrameLimits, WebSocket
from nursery.metrics import Metrics
from nursery.protocol.close_codes import ProtocolError, TransportClosed
from nursery.rates import Rate

CLOSE_TIMEOUT = 2.0


async def _echo(request: Request, ws: WebSocket) -> SocketOutcome:
    """Every message back as it came (text as text, binary as binary), until the client
    closes or breaks a rule (then the rule's close code)."""
    count = 0
    try:
        while True:
            message = await ws.receive()
            count += 1
            if isinstance(message, str):
                ws.send(message)
            else:
                ws.send_binary(message)
            if ws.backlog:
                await ws.drain()
    except TransportClosed:
        return SocketOutcome(None, "the client left", count, count)
    except ProtocolError as exc:
        with trio.move_on_after(CLOSE_TIMEOUT):
            await ws.close(exc.code, exc.reason)
        return SocketOutcome(exc.code, exc.reason, count, count)


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The ASGI side: its lifespan, and ``ok`` for any plain request (``/healthz``)."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


class _Plain:
    def preflight(self, request: Request) -> Response | None:
        return None

    def apply(self, request: Request, response: Response) -> None:
        pass

    def error(self, request: Request, status: int, code: str, message: str) -> Response:
        return Response(status, message.encode(), [("content-type", "text/plain")])

    def response_for(self, error: Exception) -> Response:
        return Response(500)


def echo_edge(limits: FrameLimits) -> Edge:
    router = Router()
    router.websocket("/echo")(_echo)
    plain = _Plain()
    return Edge(router, _app, limits=EdgeLimits(websocket=limits), hardening=plain,
                errors=plain, metrics=Metrics(), draining=lambda: False)


@asynccontextmanager
async def echo_server(limits: FrameLimits | None = None) -> AsyncIterator[tuple[str, int]]:
    """(host, port) of an edge serving ``/echo`` (and ``ok`` on any other path) until the
    block ends."""
    async with trio.open_nursery() as nursery:
        listener = ports.listen("127.0.0.1", 0)
        await nursery.start(echo_edge(limits or FrameLimits()).serve, listener)
        yield listener.getsockname()[:2]
        nursery.cancel_scope.cancel()


# -- a client that sends exact bytes ---------------------------------------------------------

def client_frame(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0,
                 mask: bytes | None = b"\x37\xfa\x21\x3d", length_form: int | None = None) -> bytes:
    """A client frame, byte for byte: ``length_form`` 126 or 127 forces that length encoding
    (even where a shorter one fits); ``mask=None`` leaves it unmasked."""
    n = len(payload)
    form = length_form or (n if n < 126 else 126 if n < 65536 else 127)
    head = bytes(((0x80 if fin else 0) | (rsv << 4) | opcode, (0x80 if mask else 0) | min(form, 127)))
    if form == 126:
        head += struct.pack("!H", n)
    elif form == 127:
        head += struct.pack("!Q", n)
    if mask is None:
        return head + payload
    key = (mask * (n // 4 + 1))[:n]
    return head + mask + (int.from_bytes(payload) ^ int.from_bytes(key)).to_bytes(n)


@dataclass
class Received:
    """What the server sent: its frames as (opcode, payload), and its close code if any
    (``closed``: the stream ended)."""

    frames: list[tuple[int, bytes]] = field(default_factory=list)
    close_code: int | None = None
    got_close: bool = False
    closed: bool = False

    @property
    def data(self) -> list[tuple[int, bytes]]:
        return [(op, p) for op, p in self.frames if op != 0x8]


class RawClient:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.received = Received()
        self._buffer = bytearray()

    async def send(self, data: bytes) -> None:
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.received.closed = True

    def _parse(self) -> None:
        buf = self._buffer
        while len(buf) >= 2:
            n, offset = buf[1] & 0x7F, 2
            if n == 126:
                if len(buf) < 4:
                    return
                n, offset = struct.unpack_from("!H", buf, 2)[0], 4
            elif n == 127:
                if len(buf) < 10:
                    return
                n, offset = struct.unpack_from("!Q", buf, 2)[0], 10
            if len(buf) < offset + n:
                return
            opcode, payload = buf[0] & 0x0F, bytes(buf[offset:offset + n])
            del buf[:offset + n]
            self.received.frames.append((opcode, payload))
            if opcode == 0x8:
                self.received.got_close = True
                if len(payload) >= 2:
                    self.received.close_code = struct.unpack("!H", payload[:2])[0]

    async def read_until(self, done: Any, timeout: float) -> bool:
        """Read until ``done(received)`` or the stream ends; False if ``timeout`` passed."""
        with trio.move_on_after(timeout):
            while not done(self.received) and not self.received.closed:
                try:
                    chunk = await self.stream.receive_some(1 << 20)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    chunk = b""
                if not chunk:
                    self.received.closed = True
                    break
                self._buffer += chunk
                self._parse()
            return True
        return False

    async def frames(self, count: int, timeout: float = 5.0) -> list[tuple[int, bytes]]:
        await self.read_until(lambda r: len(r.frames) >= count, timeout)
        return self.received.frames[:count]

    async def closing(self, timeout: float = 5.0) -> Received:
        """Wait for the server's close frame and the end of the stream."""
        await self.read_until(lambda r: False, timeout)
        return self.received


async def handshake(stream: trio.SocketStream, host: str, path: str,
                    subprotocol: str | None = None) -> bytes:
    """A websocket handshake on a raw stream; what the server sent after its 101 (frames)."""
    key = base64.b64encode(os.urandom(16)).decode()
    extra = f"Sec-WebSocket-Protocol: {subprotocol}\r\n" if subprotocol else ""
    await stream.send_all((f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           f"Sec-WebSocket-Version: 13\r\n{extra}\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = await stream.receive_some(4096)
        assert chunk, head
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    return head.split(b"\r\n\r\n", 1)[1]


@asynccontextmanager
async def raw_client(address: tuple[str, int], path: str = "/echo") -> AsyncIterator[RawClient]:
    stream = await trio.open_tcp_stream(*address)
    async with stream:
        leftover = await handshake(stream, "localhost", path)
        client = RawClient(stream)
        client._buffer += leftover
        yield client


def main() -> None:
    defaults = FrameLimits()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=9001)
    parser.add_argument("--max-message", type=int, default=defaults.max_message)
    parser.add_argument("--max-fragments", type=int, default=defaults.max_fragments)
    parser.add_argument("--frame-rate", type=int, default=defaults.frame_rate.count,
                        help="frames per second (and burst)")
    args = parser.parse_args()
    limits = FrameLimits(max_message=args.max_message, max_fragments=args.max_fragments,
                         frame_rate=Rate(args.frame_rate, 1.0))

    async def serve() -> None:
        await echo_edge(limits).serve(ports.listen("127.0.0.1", args.port))

    trio.run(serve)


if __name__ == "__main__":
    main()
