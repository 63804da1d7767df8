"""The hub: this process's live connections, by user, and the routing of broker deliveries.

The broker calls ``deliver`` synchronously; the hub hands each event to the subscribers of its
user with ``offer``, which never blocks (a subscriber whose bounded queue is full closes
itself as too slow). So one slow device never delays anyone else.

Presence is kept here too: the hub refreshes its sessions' presence entries every ttl/3 and
recomputes a user's online list when told something changed (a connect, a disconnect, an
entry that expired after an instance crashed), pushing it to that user's subscribers.

New connections are admitted a few at a time (``admit``), and revocations heard on the
broker are passed on to a ``RevocationListener`` (the session cache).

The hub follows a user's broker topic while it holds at least one of that user's
subscribers, and only then: ``join`` attaches a subscriber and returns once the topic is
heard (the feed may then read the store without missing what is published meanwhile); if
the broker is slow to confirm, it returns after ``follow_timeout`` and the user's
subscribers refill from the store when the confirmation comes.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import Protocol

import trio

from nursery.errors import BrokerUnavailable, Unavailable
from nursery.protocol.close_codes import UNAUTHENTICATED
from nursery.pubsub import events
from nursery.pubsub.broker import EVERYONE, Broker, Delivery, Followed, Message, Presence, Resubscribed

log = logging.getLogger(__name__)

# Users per presence round trip (every local user is refreshed and rechecked each ttl/3):
# one per user would cost a round trip each, all in one pipeline stalls the event loop for
# tens of milliseconds while the client packs and parses it (seen as p99 spikes in the
# fan-out benchmark at 1,000 users per instance, with redis-py).
PRESENCE_BATCH = 100


@dataclass(frozen=True, slots=True)
class Refill:
    """Changes may have been missed (the broker reconnected): re-read from the store."""


@dataclass(frozen=True, slots=True)
class OnlineNow:
    online: tuple[str, ...]


Item = events.TodoChanged | events.SessionChanged | OnlineNow | Refill


class Subscriber(Protocol):
    user_id: str
    session_id: str

    def offer(self, item: Item) -> None:
        """Queue ``item`` without blocking; a full queue closes the subscriber as too slow."""

    def close(self, code: int, reason: str) -> None:
        """Ask the subscriber to end with this close code (does not block)."""


class RevocationListener(Protocol):
    """Told of every revoked session on any instance (e.g. ``service.session_cache``)."""

    def forget(self, session_id: str) -> None: ...

    def clear(self) -> None:
        """Revocations may have been missed."""


class SetupSlot:
    """One of the hub's places for a connection being set up; ``release`` once it is live
    (or gone). Releasing twice is fine."""

    def __init__(self, limiter: trio.CapacityLimiter) -> None:
        self._limiter = limiter
        self._held = False

    async def _acquire(self) -> None:
        await self._limiter.acquire_on_behalf_of(self)
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._limiter.release_on_behalf_of(self)


class Hub:
    announce_timeout = 2.0  # a goodbye that cannot reach the broker is given up (TTL heals it)

    def __init__(
        self,
        broker: Broker,
        presence: Presence,
        *,
        presence_ttl: float,
        revocations: RevocationListener | None = None,
        setup_concurrency: int = 16,
        setup_timeout: float = 10.0,
        follow_timeout: float = 3.0,
    ) -> None:
        self._broker = broker
        self._revocations = revocations
        self._setups = trio.CapacityLimiter(setup_concurrency)
        self._setup_timeout = setup_timeout
        self._presence = presence
        self._ttl = presence_ttl
        self._subscribers: dict[str, set[Subscriber]] = defaultdict(set)
        self._online: dict[str, tuple[str, ...]] = {}
        self._stale_presence: set[str] = set()
        self._presence_wakeup = trio.Event()
        self._closed_with: tuple[int, str] | None = None
        self._follow_timeout = follow_timeout
        self._confirming: dict[str, trio.Event] = {}  # users whose topic awaits the broker
        self._refill_when_followed: set[str] = set()  # users whose join did not wait for it
        self.undecodable = 0
        self.received = 0

    # -- membership ---------------------------------------------------------------------------

    async def admit(self) -> SetupSlot:
        """A place to set a connection up (authenticate, announce, read the backlog), at most
        ``setup_concurrency`` at once: a reconnect storm (an instance restarted, thousands of
        devices come over) then waits here instead of swamping the event loop, which would
        starve live deliveries, the broker subscription's pings and the health checks.
        Raises ``Unavailable`` (try again later) when no place frees up in ``setup_timeout``."""
        slot = SetupSlot(self._setups)
        with trio.move_on_after(self._setup_timeout):
            await slot._acquire()
            return slot
        raise Unavailable("this instance is busy setting up other connections, try again")

    async def join(self, subscriber: Subscriber) -> None:
        """``attach``, then wait (at most ``follow_timeout``) until the broker delivers the
        user's messages: only then may the subscriber read the store without a gap. A
        confirmation that comes later makes the user's subscribers refill."""
        self.attach(subscriber)
        user = subscriber.user_id
        if self._broker.following(user):
            return
        confirmed = self._confirming.setdefault(user, trio.Event())
        with trio.move_on_after(self._follow_timeout):
            await confirmed.wait()
            return
        self._refill_when_followed.add(user)

    def attach(self, subscriber: Subscriber) -> None:
        """The subscriber is offered its user's events (``join`` also waits until the broker
        delivers them)."""
        peers = self._subscribers[subscriber.user_id]
        if not peers:
            self._broker.follow(subscriber.user_id)
        peers.add(subscriber)
        if self._closed_with is not None:  # joined while the instance shuts down
            subscriber.close(*self._closed_with)

    def detach(self, subscriber: Subscriber) -> None:
        user = subscriber.user_id
        peers = self._subscribers.get(user)
        if peers is not None:
            peers.discard(subscriber)
            if not peers:
                del self._subscribers[user]
                self._online.pop(user, None)
                self._refill_when_followed.discard(user)
                self._broker.unfollow(user)

    def has_session(self, user_id: str, session_id: str) -> bool:
        return any(s.session_id == session_id for s in self._subscribers.get(user_id, ()))

    def connections_of(self, user_id: str) -> int:
        return len(self._subscribers.get(user_id, ()))

    @property
    def connection_count(self) -> int:
        return sum(len(s) for s in self._subscribers.values())

    def close_all(self, code: int, reason: str) -> None:
        """Close every connection, and any that joins from now on."""
        self._closed_with = (code, reason)
        for peers in list(self._subscribers.values()):
            for subscriber in list(peers):
                subscriber.close(code, reason)

    # -- routing ------------------------------------------------------------------------------

    def deliver(self, delivery: Delivery) -> None:
        """Called by the broker for every delivery; never blocks."""
        match delivery:
            case Message(payload=payload):
                self.received += 1
                self._route(payload)
            case Followed(topics=topics):
                for user in topics:
                    confirmed = self._confirming.pop(user, None)
                    if confirmed is not None:
                        confirmed.set()
                    if user in self._refill_when_followed:
                        self._refill_when_followed.discard(user)
                        self._refill(user)
            case Resubscribed(topics=topics):
                log.warning("broker resubscribed: %s refill from the store",
                            "every connection must" if topics is None else f"{len(topics)} topics")
                if self._revocations is not None and (topics is None or EVERYONE in topics):
                    self._revocations.clear()
                for user in list(self._subscribers) if topics is None else topics:
                    self._refill(user)
                    self._refill_when_followed.discard(user)
                    confirmed = self._confirming.pop(user, None)
                    if confirmed is not None:  # heard again: a join waiting for it may go on
                        confirmed.set()

    def _refill(self, user: str) -> None:
        for subscriber in list(self._subscribers.get(user, ())):
            subscriber.offer(Refill())
        if user in self._subscribers:
            self._stale_presence.add(user)
            self._presence_wakeup.set()

    def _route(self, payload: bytes) -> None:
        try:
            event = events.decode(payload)
        except (ValueError, KeyError, TypeError):
            self.undecodable += 1
            log.warning("ignoring an undecodable broker message")
            return
        revoked = isinstance(event, events.SessionChanged) and event.op == "revoked"
        if revoked and self._revocations is not None:
            assert isinstance(event, events.SessionChanged)
            self._revocations.forget(event.session_id)
        peers = self._subscribers.get(event.user_id)
        if not peers:
            return
        if isinstance(event, events.PresenceChanged):
            self.presence_changed(event.user_id)
            return
        for subscriber in list(peers):
            if revoked and subscriber.session_id == getattr(event, "session_id", None):
                subscriber.close(UNAUTHENTICATED, "session revoked")
            else:
                subscriber.offer(event)

    # -- presence -----------------------------------------------------------------------------

    def presence_changed(self, user_id: str) -> None:
        self._stale_presence.add(user_id)
        self._presence_wakeup.set()

    async def keep_presence(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Owned by the app's nursery, runs until cancelled.

        Every ttl/3: refresh this instance's entries and recheck every local user (so entries
        of a crashed instance disappear from the lists within about ttl). In between: recheck
        users marked stale as soon as they are.
        """
        task_status.started()
        period = self._ttl / 3
        next_refresh = trio.current_time()
        while True:
            if trio.current_time() >= next_refresh:
                await self._refresh_entries()
                self._stale_presence.update(self._subscribers)
                next_refresh = trio.current_time() + period
            await self._push_online_lists()
            with trio.move_on_at(next_refresh):
                await self._presence_wakeup.wait()
            self._presence_wakeup = trio.Event()

    async def _refresh_entries(self) -> None:
        users = list(self._subscribers)
        for start in range(0, len(users), PRESENCE_BATCH):
            entries = {
                user: {s.session_id for s in self._subscribers.get(user, ())}
                for user in users[start:start + PRESENCE_BATCH]
            }
            try:
                await self._presence.refresh(entries, self._ttl)
            except BrokerUnavailable as exc:
                log.warning("presence not refreshed: %s", exc)
                return

    async def _push_online_lists(self) -> None:
        stale = [user for user in self._stale_presence if user in self._subscribers]
        self._stale_presence = set()
        for start in range(0, len(stale), PRESENCE_BATCH):
            try:
                online = await self._presence.online_many(stale[start:start + PRESENCE_BATCH])
            except BrokerUnavailable as exc:
                log.warning("presence not read: %s", exc)
                continue
            for user_id, sessions in online.items():
                now_online = tuple(sorted(sessions))
                if self._online.get(user_id) != now_online and user_id in self._subscribers:
                    self._online[user_id] = now_online
                    for subscriber in list(self._subscribers[user_id]):
                        subscriber.offer(OnlineNow(now_online))

    async def announce(self, user_id: str, session_id: str, *, connected: bool) -> None:
        """Record a connect or disconnect of ``session_id`` here and in shared presence, and
        tell the other instances to recheck. Broker trouble is logged, not raised: presence
        heals at the next refresh."""
        try:
            if connected:
                await self._presence.refresh({user_id: {session_id}}, self._ttl)
            elif not self.has_session(user_id, session_id):
                await self._presence.remove(user_id, session_id)
            changed = events.PresenceChanged(user_id)
            await self._broker.publish_many([(events.topic(changed), events.encode(changed))])
        except BrokerUnavailable as exc:
            log.warning("presence not announced: %s", exc)
        self.presence_changed(user_id)
