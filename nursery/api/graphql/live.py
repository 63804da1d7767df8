"""A GraphQL subscription's feed: the same backlog/live merge and resume guarantee as /ws.

``LiveFeeds.open`` gives a subscription its own ``service.feed.Feed``, run by a task in the
*operation's* nursery (so it ends with the operation), and returns the stream of its events.
The feed is offered every hub event of the connection (through ``members``, the socket's set
of feeds) from before it reads the store. Events reach the GraphQL stream through a channel
of ``queue_size``: a reader that falls that far behind ends the connection with 4008, so
memory per subscription is at most ``queue_size`` queued hub events plus ``queue_size``
stream events.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from nursery.protocol.close_codes import TOO_SLOW
from nursery.service.accounts import Principal
from nursery.service.feed import Feed, FeedEvent, ReadChanges

Wanted = Callable[[FeedEvent], bool]
OnClose = Callable[[int, str], None]


class LiveFeeds:
    """Starts the feeds of one websocket operation's subscription, in that operation's
    nursery. ``on_close`` ends the whole connection (4008 when a feed falls behind)."""

    def __init__(
        self,
        nursery: trio.Nursery,
        who: Principal,
        read_changes: ReadChanges,
        members: set[Feed],
        on_close: OnClose,
        *,
        queue_size: int,
    ) -> None:
        self._nursery = nursery
        self._who = who
        self._read_changes = read_changes
        self._members = members
        self._on_close = on_close
        self._queue_size = queue_size

    async def open(self, since: int | None, wanted: Wanted) -> trio.MemoryReceiveChannel[FeedEvent]:
        """A stream of the feed's ``wanted`` events after ``since`` (None: live from now).
        The feed's errors (``StoreUnavailable`` when the store cannot fill a gap) end the
        operation's nursery, and so the connection."""
        send, receive = trio.open_memory_channel[FeedEvent](self._queue_size)
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
        woken = [trio.Event()]

        def emit_now(event: FeedEvent) -> None:
            if wanted(event):
                try:
                    send.send_nowait(event)
                except trio.WouldBlock:
                    self._on_close(TOO_SLOW, "too slow: events were queuing up")
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass  # the subscription's reader is gone: so is the subscription

        async def emit(event: FeedEvent) -> None:
            if wanted(event):
                await send.send(event)

        feed = Feed(
            self._read_changes, queue_size=self._queue_size, emit_now=emit_now,
            on_wake=lambda: woken[0].set(),
            on_overflow=lambda: self._on_close(TOO_SLOW, "too slow: events were queuing up"),
        )
        self._members.add(feed)
        try:
            async with send:
                task_status.started()
                await feed.start(self._who, since, emit)
                while True:
                    await woken[0].wait()
                    woken[0] = trio.Event()
                    await feed.catch_up(emit)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the subscription's reader is gone: so is the subscription
        finally:
            self._members.discard(feed)
