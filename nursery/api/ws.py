"""/ws: the sync protocol's part of a websocket session (its ``Vocabulary``).

The opening message is ``hello`` (the token, and ``since``); then ``welcome``, the backlog and
live changes come from one feed (``service.feed``), as frames; ``ping`` is answered with
``pong``. Everything else a socket obeys (authentication, expiry, keep-alive, limits, closing)
is the session's (``service.session``).

A live change arrives from the broker already rendered as JSON (``events.TodoChanged``): its
frame is that text with the frame's type put in front, no JSON work per device.
"""

from __future__ import annotations

import time

from nursery.edge.http import Request
from nursery.edge.router import Router, SocketOutcome
from nursery.edge.websocket import WebSocket
from nursery.models import Change
from nursery.protocol import sync
from nursery.protocol.close_codes import (
    BAD_MESSAGE,
    INTERNAL_ERROR,
    TOO_SLOW,
    UNAUTHENTICATED,
    ProtocolError,
)
from nursery.pubsub import events
from nursery.service.accounts import Accounts, Principal
from nursery.service.feed import Feed, FeedEvent, Head, Online, ReadChanges, Reset, SessionEvent
from nursery.service.hub import Hub, Item
from nursery.service.session import Session, SessionLimits, SessionObserver
from nursery.service.todos import Todos


class SyncSocket:
    """One /ws session's protocol: a ``service.session.Vocabulary``."""

    name = "ws"
    ping = sync.PING
    auth_refused = UNAUTHENTICATED
    auth_timeout = UNAUTHENTICATED
    internal_error = INTERNAL_ERROR

    __slots__ = ("_session", "_instance", "_observer", "_feed", "_since")

    def __init__(
        self, session: Session, read_changes: ReadChanges, *, instance: str, queue_size: int,
        observer: SessionObserver,
    ) -> None:
        self._session = session
        self._instance = instance
        self._observer = observer
        self._since: int | None = None
        self._feed = Feed(
            read_changes, queue_size=queue_size, emit_now=self._emit_now,
            on_wake=session.wake, on_overflow=self._overflow,
        )

    def opening(self, message: str | bytes) -> str | None:
        frame = sync.parse(message)
        if not isinstance(frame, sync.Hello):
            raise ProtocolError(UNAUTHENTICATED, "hello must come first")
        self._since = frame.since
        return frame.token

    async def start(self, who: Principal) -> None:
        await self._feed.start(who, self._since, self._emit)

    def receive(self, message: str | bytes) -> None:
        frame = sync.parse(message)
        if isinstance(frame, sync.Ping):
            self._session.send(sync.PONG, "pong")
        elif isinstance(frame, sync.Hello):
            raise ProtocolError(BAD_MESSAGE, "hello was already received")

    def offer(self, item: Item) -> None:
        self._feed.offer(item)

    async def settle(self) -> None:
        if self._feed.catching_up:
            await self._feed.catch_up(self._emit)

    def _emit_now(self, event: FeedEvent) -> None:
        self._session.send(*self._frame(event))

    async def _emit(self, event: FeedEvent) -> None:
        await self._session.send_flowing(*self._frame(event))

    def _frame(self, event: FeedEvent) -> tuple[str, str]:
        match event:
            case events.TodoChanged(change_json=text, published_at=published_at):
                self._observer.sync_lag(time.time() - published_at)
                return sync.change_from_text(text), "change"
            case Change():  # from the store: a backlog or a gap
                return sync.change(event.to_json()), "change"
            case Head(rev=rev):
                return sync.welcome(self._session.session_id, self._instance, rev), "welcome"
            case Reset(rev=rev):
                return sync.reset(rev), "reset"
            case SessionEvent(op=op, session=session):
                return sync.session_event(op, session), "session"
            case Online(sessions=sessions):
                return sync.presence(list(sessions)), "presence"
        raise TypeError(f"not a feed event: {event!r}")

    def _overflow(self) -> None:
        self._session.close(TOO_SLOW, "too slow: events were queuing up")


def ws_router(
    accounts: Accounts, todos: Todos, hub: Hub, *, instance: str, limits: SessionLimits,
    observer: SessionObserver,
) -> Router:
    router = Router()

    @router.websocket("/ws")
    async def sync_socket(request: Request, ws: WebSocket) -> SocketOutcome:
        session = Session(
            ws, authenticate=accounts.authenticate, hub=hub, limits=limits, observer=observer
        )
        vocabulary = SyncSocket(
            session, todos.changes, instance=instance, queue_size=limits.queue_size,
            observer=observer,
        )
        code, reason = await session.run(vocabulary)
        request.who = session.who
        return SocketOutcome(code, reason, session.frames_in, session.frames_out)

    return router
