"""The hub side of a GraphQL websocket: the connection as a member, its subscriptions as feeds.

``joined`` makes an acknowledged connection a hub subscriber for its whole life, whether or
not it has subscriptions: the hub can then close it (1012 when the instance shuts down, 4001
when its session is revoked), and its device shows as online in presence, as on /ws.

``LiveFeeds.open`` gives a subscription its own ``service.feed`` (the same backlog/live merge
and resume guarantee as /ws), run by a task in the *operation's* nursery, which the
websocket session owns: the task ends when the operation ends. Events cross to the GraphQL
stream through a bounded channel (``STREAM_BUFFER``); a reader slower than the feed blocks
the feed, whose own bounded queue then overflows and ends the connection with 4008, so
memory per subscription is ``queue_size`` hub items plus ``STREAM_BUFFER`` events.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import trio

from nursery.pubsub.hub import Hub, Item
from nursery.service.accounts import Principal
from nursery.service.feed import FeedEvent, OnClose, ReadChanges, open_feed

STREAM_BUFFER = 16

Wanted = Callable[[FeedEvent], bool]


class _Member:
    """The connection as a hub subscriber. Its subscriptions have their own feeds, so the
    events offered to it are not needed: only ``close`` matters."""

    def __init__(self, who: Principal, on_close: OnClose) -> None:
        self.user_id, self.session_id = who.user_id, who.session_id
        self._on_close = on_close

    def offer(self, item: Item) -> None:
        pass

    def close(self, code: int, reason: str) -> None:
        self._on_close(code, reason)


@asynccontextmanager
async def joined(hub: Hub, who: Principal, on_close: OnClose) -> AsyncIterator[None]:
    """The connection is a hub member (and online in presence) for the block's duration."""
    member = _Member(who, on_close)
    hub.attach(member)
    try:
        await hub.announce(who.user_id, who.session_id, connected=True)
        yield
    finally:
        hub.detach(member)
        with trio.CancelScope(shield=True), trio.move_on_after(hub.announce_timeout):
            await hub.announce(who.user_id, who.session_id, connected=False)


class LiveFeeds:
    """Starts the feeds of one websocket operation's subscription, in that operation's
    nursery. ``on_close`` ends the whole connection (a feed's 4008, 4001, 1012)."""

    def __init__(
        self,
        nursery: trio.Nursery,
        who: Principal,
        hub: Hub,
        read_changes: ReadChanges,
        on_close: OnClose,
        *,
        queue_size: int,
    ) -> None:
        self._nursery = nursery
        self._who = who
        self._hub = hub
        self._read_changes = read_changes
        self._on_close = on_close
        self._queue_size = queue_size

    async def open(self, since: int | None, wanted: Wanted) -> trio.MemoryReceiveChannel[FeedEvent]:
        """A stream of the feed's ``wanted`` events after ``since`` (None: live from now);
        the feed is attached to the hub when this returns. Raises ``StoreUnavailable``
        (from the operation's nursery) when the store cannot fill a gap."""
        send, receive = trio.open_memory_channel[FeedEvent](STREAM_BUFFER)
        await self._nursery.start(self._run, since, wanted, send)
        return receive

    async def _run(
        self,
        since: int | None,
        wanted: Wanted,
        send: trio.MemorySendChannel[FeedEvent],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        async def emit(event: FeedEvent) -> None:
            if wanted(event):
                await send.send(event)

        async with send, open_feed(
            self._who, self._hub, self._read_changes, self._on_close, queue_size=self._queue_size
        ) as feed:
            task_status.started()
            try:
                await feed.run(since, emit)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the subscription's reader is gone: so is the subscription
