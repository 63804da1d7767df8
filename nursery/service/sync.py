"""One device's /ws connection: hello, welcome, then its feed, until closed.

Transport-independent (``Transport`` is three methods), so the protocol's timeouts are tested
on a virtual clock without sockets; ``api/ws.py`` adapts Quart's websocket. The backlog/live
merge itself is ``service.feed``.

Resource handling: ``run`` owns the connection's nursery (reader, keep-alive, feed) and closes
the transport with the close code chosen, or not at all when the peer already left.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from functools import partial
from dataclasses import dataclass
from typing import Protocol

import trio

from nursery.errors import StoreUnavailable, Unauthenticated, Unavailable
from nursery.models import Change
from nursery.pubsub import protocol
from nursery.pubsub.hub import Hub
from nursery.pubsub.ratelimit import Rate, gcra
from nursery.service.accounts import Principal
from nursery.service.feed import FeedEvent, Head, Online, ReadChanges, Reset, SessionEvent, open_feed

log = logging.getLogger(__name__)

TRY_AGAIN_LATER = 1013


class TransportClosed(Exception):
    """The peer is gone: nothing more can be sent or received."""


class Transport(Protocol):
    async def receive(self) -> str | bytes:
        """The next frame; raises ``TransportClosed`` when the peer has gone."""

    async def send(self, text: str) -> None: ...

    async def close(self, code: int, reason: str) -> None: ...


Authenticate = Callable[[str], Awaitable[Principal]]


class SyncObserver(Protocol):
    """What the session reports for metrics (``nursery.metrics.Metrics`` is one)."""

    def ws_sent(self, frame_type: str) -> None: ...

    def ws_closed(self, code: int, reason: str) -> None: ...

    def sync_lag(self, seconds: float) -> None: ...


class _NoObserver:
    def ws_sent(self, frame_type: str) -> None:
        pass

    def ws_closed(self, code: int, reason: str) -> None:
        pass

    def sync_lag(self, seconds: float) -> None:
        pass


@dataclass(frozen=True, slots=True)
class SyncLimits:
    hello_timeout: float = 5.0
    ping_interval: float = 20.0
    ping_timeout: float = 20.0
    send_timeout: float = 10.0
    queue_size: int = 256
    message_rate: Rate = Rate(20, 1.0)  # frames a client may send; more closes with 4029


class SyncSession:
    def __init__(
        self,
        transport: Transport,
        *,
        authenticate: Authenticate,
        read_changes: ReadChanges,
        hub: Hub,
        instance: str,
        limits: SyncLimits = SyncLimits(),
        observer: SyncObserver = _NoObserver(),
    ) -> None:
        self._transport = transport
        self._observer = observer
        self._authenticate = authenticate
        self._read_changes = read_changes
        self._hub = hub
        self._instance = instance
        self._limits = limits
        self._scope = trio.CancelScope()
        self._send_lock = trio.Lock()
        self._closing: tuple[int, str] | None = None
        self._peer_gone = False
        self._last_heard = 0.0
        self._session_id = ""

    def close(self, code: int, reason: str) -> None:
        """End the connection with this close code (the first reason given wins)."""
        if self._closing is None:
            self._closing = (code, reason)
        self._scope.cancel()

    async def run(self) -> None:
        self._last_heard = trio.current_time()
        with self._scope:
            await self._ending_on_errors(self._serve)
        if not self._peer_gone:
            code, reason = self._closing or (protocol.NORMAL, "")
            self._observer.ws_closed(code, reason)
            with trio.CancelScope(shield=True), trio.move_on_after(self._limits.send_timeout):
                try:
                    await self._transport.close(code, reason)
                except TransportClosed:
                    pass

    async def _ending_on_errors(self, task: Callable[[], Awaitable[None]]) -> None:
        """Run ``task``; the errors that end a connection become its close code instead of
        propagating (so sibling tasks are cancelled by ``close``, not by an exception)."""
        try:
            await task()
        except TransportClosed:
            self._peer_gone = True
            self._scope.cancel()
        except protocol.ProtocolError as exc:
            self.close(exc.code, exc.reason)
        except Unauthenticated as exc:
            self.close(protocol.UNAUTHENTICATED, exc.message)
        except StoreUnavailable:
            self.close(TRY_AGAIN_LATER, "the database is unavailable, try again")
        except Unavailable as exc:
            self.close(TRY_AGAIN_LATER, exc.message)

    async def _serve(self) -> None:
        hello = await self._receive_hello()
        who = await self._authenticate(hello.token)
        self._session_id = who.session_id
        async with (
            open_feed(who, self._hub, self._read_changes, self.close,
                      queue_size=self._limits.queue_size) as feed,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(self._ending_on_errors, self._read)
            nursery.start_soon(self._ending_on_errors, partial(self._keep_alive, who.expires_at))
            # Errors are turned into close codes inside the nursery: out of it they would
            # come wrapped in an exception group.
            await self._ending_on_errors(partial(feed.run, hello.since, self._emit))

    async def _receive_hello(self) -> protocol.Hello:
        with trio.move_on_after(self._limits.hello_timeout):
            frame = protocol.parse(await self._transport.receive())
            if not isinstance(frame, protocol.Hello):
                raise protocol.ProtocolError(protocol.UNAUTHENTICATED, "hello must come first")
            return frame
        raise protocol.ProtocolError(protocol.UNAUTHENTICATED, "no hello in time")

    async def _emit(self, event: FeedEvent) -> None:
        match event:
            case Change():
                await self._send(protocol.change(event), "change")
                if event.todo is not None:
                    self._observer.sync_lag(time.time() - event.todo.updated_at.timestamp())
            case Head(rev=rev):
                await self._send(protocol.welcome(self._session_id, self._instance, rev), "welcome")
            case Reset(rev=rev):
                await self._send(protocol.reset(rev), "reset")
            case SessionEvent(op=op, session=session):
                await self._send(protocol.session_event(op, session), "session")
            case Online(sessions=sessions):
                await self._send(protocol.presence(list(sessions)), "presence")

    async def _send(self, text: str, frame_type: str) -> None:
        async with self._send_lock:
            with trio.move_on_after(self._limits.send_timeout) as timer:
                await self._transport.send(text)
        self._observer.ws_sent(frame_type)
        if timer.cancelled_caught:
            self.close(protocol.TOO_SLOW, "too slow: a write timed out")
            await trio.lowlevel.checkpoint()  # raises Cancelled: the scope is cancelled

    async def _read(self) -> None:
        allowance: float | None = None  # this connection's GCRA state
        while True:
            raw = await self._transport.receive()
            verdict, allowance_next = gcra(allowance, trio.current_time(), self._limits.message_rate)
            if not verdict.allowed:
                raise protocol.ProtocolError(protocol.RATE_LIMITED, "too many messages")
            allowance = allowance_next
            frame = protocol.parse(raw)
            self._last_heard = trio.current_time()
            if isinstance(frame, protocol.Ping):
                await self._send(protocol.PONG, "pong")
            elif isinstance(frame, protocol.Hello):
                raise protocol.ProtocolError(protocol.BAD_MESSAGE, "hello was already received")

    async def _keep_alive(self, expires_at: float) -> None:
        """Ping a quiet peer and close when it stops answering (4008), or when the token
        expires (4001). One task for both: every task per connection costs memory."""
        expiry = trio.current_time() + max(0.0, expires_at - time.time())  # inf stays inf
        with trio.move_on_at(expiry):
            while True:
                await trio.sleep(self._limits.ping_interval)
                pinged_at = trio.current_time()
                await self._send(protocol.PING, "ping")
                await trio.sleep(self._limits.ping_timeout)
                if self._last_heard < pinged_at:
                    self.close(protocol.TOO_SLOW, "no answer to ping")
                    return
        self.close(protocol.UNAUTHENTICATED, "the session expired")
