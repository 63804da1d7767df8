"""A reader's feed: the backlog after a revision, then live changes, merged without loss.

Used by every live transport (a /ws socket has one feed, a GraphQL subscription one each);
they only turn ``FeedEvent``s into their own messages.

The merge (the heart of the sync guarantee): the feed is a hub subscriber *before* it reads
the store, so nothing committed after the read can be missed; live changes at or below the
last revision emitted are duplicates and dropped; a live change beyond the next expected
revision means something was lost on the way (an out-of-order or dropped broker message), so
the gap is read from the store before anything else is emitted. Revisions are per-user and
contiguous, so "next expected" is exact. A broker reconnect (``Refill``) reads everything after
the last revision emitted. The reader therefore sees strictly increasing revisions, none
twice, none lost.

Two paths, one rule (``_decide``):

- **live** (the common case): ``offer`` is called by the hub for each event and emits it at
  once through ``emit_now``, synchronously: no task, no queue, no wake-up per event;
- **catching up** (at the start, after a gap or a broker reconnect): ``offer`` queues events
  (at most ``queue_size``; one more ends the reader through ``on_overflow``, as too slow) and
  calls ``on_wake``; the feed's owner then runs ``catch_up``, which reads the store, emits
  with the awaitable ``emit`` (so a slow reader holds the store reads back), works through the
  queue and goes live again.

Memory: ``queue_size`` queued events while catching up, plus one store batch.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from nursery.models import Change, ChangeBatch
from nursery.pubsub import events
from nursery.service.accounts import Principal
from nursery.service.hub import Item, OnlineNow, Refill

BATCH = 500
BEYOND_ANY_REVISION = 2**62  # ``changes_since`` from here returns just the head revision

ReadChanges = Callable[[Principal, int, int], Awaitable[ChangeBatch]]


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


# A change is a ``Change`` when read from the store, a ``TodoChanged`` (already rendered as
# JSON) when it came live from the broker.
FeedEvent = Head | Change | events.TodoChanged | Reset | SessionEvent | Online
EmitNow = Callable[[FeedEvent], None]
Emit = Callable[[FeedEvent], Awaitable[None]]


class _Gap:
    """``_decide``'s verdict: changes were missed, read the store."""


GAP: Final = _Gap()


class Feed:
    """One reader's merge. Create it, offer it the hub's events, then ``start`` it."""

    __slots__ = ("_who", "_read_changes", "_queue", "_queue_size", "_emit_now", "_on_wake",
                 "_on_overflow", "_last", "_live")

    def __init__(
        self,
        read_changes: ReadChanges,
        *,
        queue_size: int,
        emit_now: EmitNow,
        on_wake: Callable[[], None],
        on_overflow: Callable[[], None],
    ) -> None:
        self._who: Principal | None = None
        self._read_changes = read_changes
        self._queue: deque[Item] | None = None  # made when first needed: most feeds never queue
        self._queue_size = queue_size
        self._emit_now = emit_now
        self._on_wake = on_wake
        self._on_overflow = on_overflow
        self._last = 0  # the last revision emitted
        self._live = False  # False until started, and while catching up

    @property
    def catching_up(self) -> bool:
        """The owner must run ``catch_up`` (it was woken for it)."""
        return not self._live

    # -- the hub's side: never blocks -----------------------------------------------------------

    def offer(self, item: Item) -> None:
        if self._live and not self._queue:
            verdict = self._decide(item)
            if isinstance(verdict, _Gap):
                self._live = False
                self._on_wake()
            elif verdict is not None:
                self._emit_now(verdict)
            return
        if self._queue is None:
            self._queue = deque()
        if len(self._queue) < self._queue_size:
            self._queue.append(item)
        else:
            self._on_overflow()

    # -- the owner's side -----------------------------------------------------------------------

    async def start(self, who: Principal, since: int | None, emit: Emit) -> None:
        """Emit ``who``'s head revision, then the backlog after ``since`` (None: none; past
        the retention horizon or above the head: a reset), then what arrived meanwhile; the
        feed is live when this returns. Raises ``StoreUnavailable`` when the store cannot
        answer."""
        self._who = who
        head = await self._read_changes(who, BEYOND_ANY_REVISION, 1)
        await emit(Head(head.rev))
        if since is None:
            self._last = head.rev
        elif head.resets(since):
            await emit(Reset(head.rev))
            self._last = head.rev
        else:
            self._last = since
        await self._settle(emit, read_first=since is not None and self._last < head.rev)

    async def catch_up(self, emit: Emit) -> None:
        """Fill the gap from the store and work through the queue; live again on return."""
        await self._settle(emit, read_first=True)

    async def _settle(self, emit: Emit, *, read_first: bool) -> None:
        read = read_first
        while True:
            if read:
                await self._read_after(emit)
            read = True
            while self._queue:
                verdict = self._decide(self._queue.popleft())
                if isinstance(verdict, _Gap):
                    break
                if verdict is not None:
                    await emit(verdict)
            else:
                self._queue = None
                self._live = True
                return

    async def _read_after(self, emit: Emit) -> None:
        """Emit every change after ``_last`` from the store."""
        assert self._who is not None, "start first"
        while True:
            batch = await self._read_changes(self._who, self._last, BATCH)
            if self._last < batch.horizon:
                await emit(Reset(batch.rev))
                self._last = batch.rev
                return
            for change in batch.changes:
                await emit(change)
            self._last = batch.rev
            if not batch.more:
                return

    def _decide(self, item: Item) -> FeedEvent | _Gap | None:
        """What one hub item means for this reader: an event to emit, a gap, or nothing."""
        match item:
            case events.TodoChanged(rev=rev):
                if rev == self._last + 1:
                    self._last = rev
                    return item
                return GAP if rev > self._last else None
            case Refill():
                return GAP
            case events.SessionChanged(op=op, session=session):
                return SessionEvent(op, session)
            case OnlineNow(online=online):
                return Online(online)
        return None
