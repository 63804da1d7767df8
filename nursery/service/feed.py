"""A device's feed: the backlog after a revision, then live changes, merged without loss.

Used by every live transport (/ws, GraphQL subscriptions); they only turn ``FeedEvent``s into
their own frames.

The merge (the heart of the sync guarantee): the feed joins the hub *before* reading the
store, so nothing committed after the read can be missed; live changes at or below the last
revision emitted are duplicates and dropped; a live change beyond the next expected revision
means something was lost on the way (an out-of-order or dropped broker message), so the gap is
read from the store before anything else is emitted. Revisions are per-user and contiguous, so
"next expected" is exact. A broker reconnect (``Refill``) reads everything after the last
revision emitted. The reader therefore sees strictly increasing revisions, none twice, none lost.

Memory is bounded by ``queue_size`` queued items plus one store batch. A feed whose queue
fills (its reader is too slow) is ended through ``on_close`` with 4008; a revoked session with
4001; an instance shutdown with 1012. The transport decides what closing means.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import trio

from nursery.models import Change, ChangeBatch
from nursery.pubsub import events, protocol
from nursery.pubsub.hub import Hub, Item, OnlineNow, Refill
from nursery.service.accounts import Principal

BATCH = 500
BEYOND_ANY_REVISION = 2**62  # ``changes_since`` from here returns just the head revision

ReadChanges = Callable[[Principal, int, int], Awaitable[ChangeBatch]]
OnClose = Callable[[int, str], None]


@dataclass(frozen=True, slots=True)
class Head:
    """First event: the user's current revision."""

    rev: int


@dataclass(frozen=True, slots=True)
class Reset:
    """``since`` is past retention (or from another history): refetch, then go on from ``rev``."""

    rev: int


@dataclass(frozen=True, slots=True)
class SessionEvent:
    op: str
    session: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Online:
    sessions: tuple[str, ...]


FeedEvent = Head | Change | Reset | SessionEvent | Online
Emit = Callable[[FeedEvent], Awaitable[None]]


class Feed:
    """A hub subscriber for one principal. Create with ``open_feed``."""

    def __init__(
        self,
        who: Principal,
        read_changes: ReadChanges,
        on_close: OnClose,
        queue_size: int,
        on_live: Callable[[], None] = lambda: None,
    ) -> None:
        self.user_id, self.session_id = who.user_id, who.session_id
        self._who = who
        self._on_live = on_live
        self._read_changes = read_changes
        self._on_close = on_close
        self._inbox_in, self._inbox = trio.open_memory_channel[Item](queue_size)

    # -- Subscriber (called by the hub; never blocks) -------------------------------------------

    def offer(self, item: Item) -> None:
        try:
            self._inbox_in.send_nowait(item)
        except trio.WouldBlock:
            self.close(protocol.TOO_SLOW, "too slow: events were queuing up")

    def close(self, code: int, reason: str) -> None:
        self._on_close(code, reason)

    # -- the merge ------------------------------------------------------------------------------

    async def run(self, since: int | None, emit: Emit) -> None:
        """Emit the head, the backlog after ``since`` (None: none), then live events, until
        cancelled. Raises ``StoreUnavailable`` when the store cannot fill a gap."""
        head = await self._read_changes(self._who, BEYOND_ANY_REVISION, 1)
        await emit(Head(head.rev))
        if since is None:
            last = head.rev
        elif head.resets(since):
            await emit(Reset(head.rev))
            last = head.rev
        else:
            last = await self._catch_up(since, emit)
        self._on_live()
        async for item in self._inbox:
            match item:
                case events.TodoChanged(change=change):
                    if change.rev == last + 1:
                        await emit(change)
                        last = change.rev
                    elif change.rev > last:
                        last = await self._catch_up(last, emit)
                case Refill():
                    last = await self._catch_up(last, emit)
                case events.SessionChanged(op=op, session=session):
                    await emit(SessionEvent(op, session))
                case OnlineNow(online=online):
                    await emit(Online(online))

    async def _catch_up(self, since: int, emit: Emit) -> int:
        """Emit every change after ``since`` from the store; returns the revision reached."""
        while True:
            batch = await self._read_changes(self._who, since, BATCH)
            if since < batch.horizon:
                await emit(Reset(batch.rev))
                return batch.rev
            for change in batch.changes:
                await emit(change)
            since = batch.rev
            if not batch.more:
                return since


@asynccontextmanager
async def open_feed(
    who: Principal,
    hub: Hub,
    read_changes: ReadChanges,
    on_close: OnClose,
    *,
    queue_size: int,
) -> AsyncIterator[Feed]:
    """A feed attached to the hub and announced in presence for the block's duration.

    Holds one of the hub's setup places (``Hub.admit``) until ``run`` has caught up."""
    slot = await hub.admit()
    feed = Feed(who, read_changes, on_close, queue_size, on_live=slot.release)
    hub.attach(feed)
    try:
        await hub.announce(who.user_id, who.session_id, connected=True)
        yield feed
    finally:
        slot.release()
        hub.detach(feed)
        with trio.CancelScope(shield=True), trio.move_on_after(hub.announce_timeout):
            await hub.announce(who.user_id, who.session_id, connected=False)
