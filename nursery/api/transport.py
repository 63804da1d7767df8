"""Quart's websocket as a ``service.sync.Transport``, for /ws and GraphQL subscriptions alike.

Quart cancels the handler when the peer disconnects; what a dead socket raises (Quart's
``ClientDisconnectedError``, OS and runtime errors, Hypercorn closing it under us) becomes
``TransportClosed``, so the session knows not to send a close frame.
"""

from __future__ import annotations

import trio
from quart import websocket
from quart.wrappers.base import ClientDisconnectedError

from nursery.service.sync import TransportClosed

CLOSE_GRACE = 1.0  # seconds to wait for the peer's close frame after ours


# A socket being closed under us: Hypercorn shuts a connection the peer left (send_eof) from
# another task, and a frame sent at that moment meets BusyResourceError.
_GONE = (OSError, RuntimeError, ClientDisconnectedError, trio.BusyResourceError)


class QuartTransport:
    """Quart cancels the handler when the peer disconnects; errors on a dead socket are
    reported as ``TransportClosed``."""

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
        """Send the close frame, then read (and drop) what the peer still sends until its
        close frame arrives, at most ``CLOSE_GRACE`` seconds. Closing a socket with unread
        data makes the kernel send RST, and the peer would lose our close frame (1006)."""
        try:
            await websocket.close(code, reason)
            with trio.move_on_after(CLOSE_GRACE):
                while True:
                    await websocket.receive()
        except _GONE as exc:
            if not isinstance(exc, ClientDisconnectedError):
                raise TransportClosed() from exc
