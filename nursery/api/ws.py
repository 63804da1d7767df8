"""/ws: the sync protocol over Quart's websocket. Only adapts; ``service.sync`` decides."""

from __future__ import annotations

from quart import Blueprint, websocket

from nursery.api.transport import QuartTransport
from nursery.pubsub.hub import Hub
from nursery.service.accounts import Accounts
from nursery.service.sync import SyncLimits, SyncObserver, SyncSession
from nursery.service.todos import Todos


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
