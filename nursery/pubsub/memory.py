"""The in-process broker and presence: one process, no server, the embedded default.

Several app instances in one process (as in tests) may share one bus: give each its own
``MemoryBroker.sibling()`` (and ``MemoryPresence.sibling()``), so that each follows its own
topics and ``remove`` only forgets the calling instance's presence entry, exactly as with
Redis. Following a topic takes effect at once: there is no server to confirm it.
"""

from __future__ import annotations

import secrets
from collections.abc import Collection, Sequence
from typing import NoReturn

import trio

from nursery.errors import BrokerUnavailable
from nursery.pubsub.broker import EVERYONE, Deliver, Delivery, Message, Resubscribed


class _Subscriber:
    """One ``subscribe`` call. A ``deliver`` that raises fails this subscriber's own task
    (as it would with Redis), never the publisher that happened to call it."""

    __slots__ = ("deliver", "error", "failed")

    def __init__(self, deliver: Deliver) -> None:
        self.deliver = deliver
        self.error: BaseException | None = None
        self.failed = trio.Event()

    def hand(self, delivery: Delivery) -> None:
        if self.failed.is_set():
            return
        try:
            self.deliver(delivery)
        except Exception as exc:  # noqa: BLE001 - kept, and re-raised in the subscriber's task
            self.error = exc
            self.failed.set()


class _Bus:
    """What the instances of one process share."""

    def __init__(self) -> None:
        self.members: list[MemoryBroker] = []
        self.closed = False


class MemoryBroker:
    """Publishing calls the ``deliver`` of every subscription that follows the topic,
    synchronously, in publish order. Nothing is queued here: ``deliver`` is the subscriber's
    (bounded) queue."""

    connected = True  # nothing in a process can be lost

    def __init__(self, bus: _Bus | None = None) -> None:
        self._bus = bus or _Bus()
        self._bus.members.append(self)
        self._topics: set[str] = {EVERYONE}
        self._subscribers: list[_Subscriber] = []

    def sibling(self) -> MemoryBroker:
        """Another instance's broker on the same bus."""
        return MemoryBroker(self._bus)

    async def publish_many(self, messages: Sequence[tuple[str, bytes]]) -> None:
        """Deliver each to every subscription following its topic. Cancelled before
        delivery → nothing is delivered."""
        await trio.lowlevel.checkpoint()
        if self._bus.closed:
            raise BrokerUnavailable("the broker is closed")
        for topic, payload in messages:
            message = Message(topic, bytes(payload))
            for member in tuple(self._bus.members):
                if topic in member._topics:
                    for subscriber in tuple(member._subscribers):
                        subscriber.hand(message)

    def follow(self, topic: str) -> None:
        self._topics.add(topic)

    def unfollow(self, topic: str) -> None:
        if topic != EVERYONE:
            self._topics.discard(topic)

    def following(self, topic: str) -> bool:
        return topic in self._topics

    async def subscribe(
        self, deliver: Deliver, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Registered until cancelled; the caller's nursery owns this task. Re-raises, in this
        task, an exception that ``deliver`` raised."""
        if self._bus.closed:
            raise BrokerUnavailable("the broker is closed")
        subscriber = _Subscriber(deliver)
        self._subscribers.append(subscriber)
        try:
            task_status.started()
            await subscriber.failed.wait()
            assert subscriber.error is not None
            raise subscriber.error
        finally:
            self._subscribers.remove(subscriber)

    def simulate_resubscribe(self) -> None:
        """For tests: tell this instance's subscribers they lost messages, as a Redis
        reconnect would."""
        for subscriber in tuple(self._subscribers):
            subscriber.hand(Resubscribed())

    async def aclose(self) -> None:
        """Later publishes raise ``BrokerUnavailable``; running subscriptions are left to
        their owners' cancellation."""
        self._bus.closed = True
        await trio.lowlevel.checkpoint()


# user id → (session id, instance id) → expiry on the trio clock
_Table = dict[str, dict[tuple[str, str], float]]


class MemoryPresence:
    """Presence in a dict, with expiry on ``trio.current_time()`` (so ``autojump_clock``
    makes TTL tests instant). Each object is one instance; ``sibling()`` shares the table."""

    def __init__(self) -> None:
        self.instance_id = secrets.token_hex(8)
        self._table: _Table = {}

    def sibling(self) -> MemoryPresence:
        """Another instance's view of the same table (several app instances, one process)."""
        other = MemoryPresence()
        other._table = self._table
        return other

    async def refresh(self, entries: dict[str, set[str]], ttl: float) -> None:
        await trio.lowlevel.checkpoint()
        now = trio.current_time()
        self._sweep(now)
        for user_id, sessions in entries.items():
            if sessions:
                table = self._table.setdefault(user_id, {})
                for session_id in sessions:
                    table[session_id, self.instance_id] = now + ttl

    async def remove(self, user_id: str, session_id: str) -> None:
        await trio.lowlevel.checkpoint()
        table = self._table.get(user_id)
        if table is not None:
            table.pop((session_id, self.instance_id), None)
            if not table:
                del self._table[user_id]

    async def online(self, user_id: str) -> set[str]:
        return (await self.online_many([user_id]))[user_id]

    async def online_many(self, user_ids: Collection[str]) -> dict[str, set[str]]:
        await trio.lowlevel.checkpoint()
        now = trio.current_time()
        return {
            user_id: {sid for (sid, _), expiry in self._table.get(user_id, {}).items() if expiry > now}
            for user_id in user_ids
        }

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()

    def _sweep(self, now: float) -> None:
        # Bounds memory the way Redis key expiry does: a user nobody asks about is dropped.
        for user_id in tuple(self._table):
            table = self._table[user_id]
            for key in [k for k, expiry in table.items() if expiry <= now]:
                del table[key]
            if not table:
                del self._table[user_id]
