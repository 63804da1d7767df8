"""/ws: the sync protocol over Quart's websocket. Only adapts; ``service.sync`` decides."""

from __future__ import annotations

import trio
from quart import Blueprint, websocket
from quart.wrappers.base import ClientDisconnectedError

from nursery.pubsub.hub import Hub
from nursery.service.accounts import Accounts
from nursery.service.sync import SyncLimits, SyncObserver, SyncSession, TransportClosed
from nursery.service.todos import Todos


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


def ws_blueprint(
    accounts: Accounts,
    todos: Todos,
    hub: Hub,
    instance: str,
    limits: SyncLimits,
    observer: SyncObserver,
) -> Blueprint:
    ws = Blueprint("ws", __name__)

    @ws.websocket("/ws")
    async def sync() -> None:
        await websocket.accept()
        session = SyncSession(
            QuartTransport(),
            authenticate=accounts.authenticate,
            read_changes=lambda who, since, limit: todos.changes(who, since, limit),
            hub=hub,
            instance=instance,
            limits=limits,
            observer=observer,
        )
        await session.run()

    return ws
