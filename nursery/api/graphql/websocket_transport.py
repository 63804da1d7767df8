"""Quart's websocket as a ``service.sync.Transport`` for the GraphQL connection.

Quart reports a peer that left as ``ClientDisconnectedError`` on receive (and OS or runtime
errors on a dead socket); all become ``TransportClosed``, so the session knows not to send a
close frame. (/ws's ``api.ws.QuartTransport`` maps only the latter two.)
"""

from __future__ import annotations

import trio
from quart import websocket
from quart.wrappers.base import ClientDisconnectedError

from nursery.service.sync import TransportClosed

# BusyResourceError: Hypercorn shuts a connection the peer left (send_eof) from another task,
# and a frame sent at that moment meets it.
_GONE = (ClientDisconnectedError, OSError, RuntimeError, trio.BusyResourceError)


class QuartWebsocketTransport:
    async def receive(self) -> str | bytes:
        try:
            return await websocket.receive()
        except _GONE as exc:
            raise TransportClosed() from exc

    async def send(self, text: str) -> None:
        try:
            await websocket.send(text)
        except _GONE as exc:
            raise TransportClosed() from exc

    async def close(self, code: int, reason: str) -> None:
        try:
            await websocket.close(code, reason)
        except _GONE as exc:
            raise TransportClosed() from exc
