"""One device's live feed over /ws: hello, welcome, backlog, then live changes until closed.

Transport-independent (``Transport`` is three methods), so the protocol's timeouts are
tested on a virtual clock without sockets; ``api/ws.py`` adapts Quart's websocket.

The merge of backlog and live changes (the heart of the sync guarantee): the session joins
the hub *before* reading the store, so nothing committed after the read can be missed; live
changes at or below the last revision sent are duplicates and dropped; a live change beyond
the next expected revision means something was lost on the way (an out-of-order or dropped
broker message), so the gap is read from the store before anything else is sent. Revisions
are per-user and contiguous, so "next expected" is exact. A broker reconnect (``Refill``) reads
everything after the last revision sent. The client therefore sees strictly increasing
revisions, none twice, none lost.

Resource handling: ``run`` owns the connection's nursery (reader, heartbeat, feed) and closes
the transport with the close code chosen, or not at all when the peer already left.
Memory per connection is bounded by ``queue_size`` items plus one store batch.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import trio

from nursery.errors import StoreUnavailable, Unauthenticated
from nursery.models import ChangeBatch
from nursery.pubsub import events, protocol
from nursery.pubsub.hub import Hub, Item, OnlineNow, Refill
from nursery.service.accounts import Principal

log = logging.getLogger(__name__)

BATCH = 500
BEYOND_ANY_REVISION = 2**62  # ``changes_since`` from here returns just the head revision
TRY_AGAIN_LATER = 1013


class TransportClosed(Exception):
    """The peer is gone: nothing more can be sent or received."""


class Transport(Protocol):
    async def receive(self) -> str | bytes:
        """The next frame; raises ``TransportClosed`` when the peer has gone."""

    async def send(self, text: str) -> None: ...

    async def close(self, code: int, reason: str) -> None: ...


Authenticate = Callable[[str], Awaitable[Principal]]
ReadChanges = Callable[[Principal, int, int], Awaitable[ChangeBatch]]


@dataclass(frozen=True, slots=True)
class SyncLimits:
    hello_timeout: float = 5.0
    ping_interval: float = 20.0
    ping_timeout: float = 20.0
    send_timeout: float = 10.0
    queue_size: int = 256


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
    ) -> None:
        self._transport = transport
        self._authenticate = authenticate
        self._read_changes = read_changes
        self._hub = hub
        self._instance = instance
        self._limits = limits
        self._inbox_in, self._inbox = trio.open_memory_channel[Item](limits.queue_size)
        self._scope = trio.CancelScope()
        self._send_lock = trio.Lock()
        self._closing: tuple[int, str] | None = None
        self._peer_gone = False
        self._last_heard = 0.0
        self.user_id = ""
        self.session_id = ""

    # -- Subscriber (called by the hub; never blocks) -------------------------------------------

    def offer(self, item: Item) -> None:
        try:
            self._inbox_in.send_nowait(item)
        except trio.WouldBlock:
            self.close(protocol.TOO_SLOW, "too slow: events were queuing up")

    def close(self, code: int, reason: str) -> None:
        if self._closing is None:
            self._closing = (code, reason)
        self._scope.cancel()

    # -- the connection -------------------------------------------------------------------------

    async def run(self) -> None:
        self._last_heard = trio.current_time()
        with self._scope:
            await self._ending_on_errors(self._serve)
        if not self._peer_gone:
            code, reason = self._closing or (protocol.NORMAL, "")
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

    async def _serve(self) -> None:
        hello = await self._receive_hello()
        who = await self._authenticate(hello.token)
        self.user_id, self.session_id = who.user_id, who.session_id
        self._hub.attach(self)
        try:
            await self._hub.announce(who.user_id, who.session_id, connected=True)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._ending_on_errors, self._read)
                nursery.start_soon(self._ending_on_errors, self._heartbeat)
                await self._feed(who, hello.since)
        finally:
            self._hub.detach(self)
            with trio.CancelScope(shield=True), trio.move_on_after(self._limits.send_timeout):
                await self._hub.announce(who.user_id, who.session_id, connected=False)

    async def _receive_hello(self) -> protocol.Hello:
        with trio.move_on_after(self._limits.hello_timeout):
            frame = protocol.parse(await self._transport.receive())
            if not isinstance(frame, protocol.Hello):
                raise protocol.ProtocolError(protocol.UNAUTHENTICATED, "hello must come first")
            return frame
        raise protocol.ProtocolError(protocol.UNAUTHENTICATED, "no hello in time")

    async def _send(self, text: str) -> None:
        async with self._send_lock:
            with trio.move_on_after(self._limits.send_timeout) as timer:
                await self._transport.send(text)
        if timer.cancelled_caught:
            self.close(protocol.TOO_SLOW, "too slow: a write timed out")
            await trio.lowlevel.checkpoint()  # raises Cancelled: the scope is cancelled

    async def _read(self) -> None:
        while True:
            frame = protocol.parse(await self._transport.receive())
            self._last_heard = trio.current_time()
            if isinstance(frame, protocol.Ping):
                await self._send(protocol.PONG)
            elif isinstance(frame, protocol.Hello):
                raise protocol.ProtocolError(protocol.BAD_MESSAGE, "hello was already received")

    async def _heartbeat(self) -> None:
        while True:
            await trio.sleep(self._limits.ping_interval)
            pinged_at = trio.current_time()
            await self._send(protocol.PING)
            await trio.sleep(self._limits.ping_timeout)
            if self._last_heard < pinged_at:
                self.close(protocol.TOO_SLOW, "no answer to ping")

    # -- backlog and live -----------------------------------------------------------------------

    async def _feed(self, who: Principal, since: int | None) -> None:
        head = await self._read_changes(who, BEYOND_ANY_REVISION, 1)
        await self._send(protocol.welcome(who.session_id, self._instance, head.rev))
        if since is None:
            last = head.rev
        elif since < head.horizon or since > head.rev:
            # Deletes after ``since`` were forgotten, or ``since`` is from another history.
            await self._send(protocol.reset(head.rev))
            last = head.rev
        else:
            last = await self._catch_up(who, since)
        async for item in self._inbox:
            match item:
                case events.TodoChanged(change=change):
                    if change.rev == last + 1:
                        await self._send(protocol.change(change))
                        last = change.rev
                    elif change.rev > last:
                        last = await self._catch_up(who, last)
                case Refill():
                    last = await self._catch_up(who, last)
                case events.SessionChanged(op=op, session=session):
                    await self._send(protocol.session_event(op, session))
                case OnlineNow(online=online):
                    await self._send(protocol.presence(list(online)))

    async def _catch_up(self, who: Principal, since: int) -> int:
        """Send every change after ``since`` from the store; returns the revision reached."""
        while True:
            batch = await self._read_changes(who, since, BATCH)
            if since < batch.horizon:
                await self._send(protocol.reset(batch.rev))
                return batch.rev
            for change in batch.changes:
                await self._send(protocol.change(change))
            since = batch.rev
            if not batch.more:
                return since
