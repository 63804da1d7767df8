"""The in-process broker and presence: one process, no server, the embedded default.

Several app instances in one process (as in tests) may share one ``MemoryBroker``; for
presence, give each instance its own ``MemoryPresence.sibling()`` of a shared table, so that
``remove`` only forgets the calling instance's entry, exactly as with Redis.
"""

from __future__ import annotations

import secrets
from collections.abc import Collection, Sequence
from typing import NoReturn

import trio

from nursery.errors import BrokerUnavailable
from nursery.pubsub.broker import Deliver, Delivery, Message, Resubscribed


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


class MemoryBroker:
    """Publish calls every live subscriber's ``deliver`` synchronously, in publish order.

    Nothing is queued here: ``deliver`` is the subscriber's (bounded) queue.
    """

    connected = True  # nothing in a process can be lost

    def __init__(self) -> None:
        self._subscribers: list[_Subscriber] = []
        self._closed = False

    async def publish(self, payload: bytes) -> None:
        """Deliver to every subscriber. Cancelled before delivery → nothing is delivered."""
        await trio.lowlevel.checkpoint()
        if self._closed:
            raise BrokerUnavailable("the broker is closed")
        message = Message(bytes(payload))
        for subscriber in tuple(self._subscribers):
            subscriber.hand(message)

    async def publish_many(self, payloads: Sequence[bytes]) -> None:
        await trio.lowlevel.checkpoint()
        for payload in payloads:
            await self.publish(payload)

    async def subscribe(
        self, deliver: Deliver, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Registered until cancelled; the caller's nursery owns this task. Re-raises, in this
        task, an exception that ``deliver`` raised."""
        if self._closed:
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
        """For tests: tell every subscriber it lost messages, as a Redis reconnect would."""
        for subscriber in tuple(self._subscribers):
            subscriber.hand(Resubscribed())

    async def aclose(self) -> None:
        """Later publishes raise ``BrokerUnavailable``; running subscriptions are left to
        their owners' cancellation."""
        self._closed = True
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
