"""The broker: a doorbell with payload between the instances of one deployment.

It is at-most-once: a message published while a subscriber is disconnected is gone. So a
subscriber that reconnects is told (``Resubscribed``) and every connection refills from the
store, which is the truth. Messages are opaque bytes; the hub gives them meaning.

Implementations: ``memory.MemoryBroker`` (one process), ``redis.RedisBroker`` (many).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import NoReturn, Protocol

import trio

CHANNEL = "nursery:events"


@dataclass(frozen=True, slots=True)
class Message:
    payload: bytes


@dataclass(frozen=True, slots=True)
class Resubscribed:
    """The subscription was lost and is back: messages in between may be missing."""


Delivery = Message | Resubscribed
Deliver = Callable[[Delivery], None]


class Broker(Protocol):
    connected: bool  # whether the subscription is live right now (messages are arriving)

    async def publish(self, payload: bytes) -> None:
        """Send to every subscriber, this process included. Raises ``BrokerUnavailable``
        when the message could not be handed over within the broker timeout."""

    async def publish_many(self, payloads: Sequence[bytes]) -> None:
        """``publish`` each, in order, in one round trip."""

    async def subscribe(
        self, deliver: Deliver, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Call ``deliver`` (synchronously, it must not block) for every message, until
        cancelled. Reconnects with backoff after losing the server, then delivers
        ``Resubscribed``. ``task_status.started()`` once the first subscription is live."""


class Presence(Protocol):
    """Which sessions have a live connection, across instances. Entries expire after
    ``ttl`` seconds unless refreshed, so a crashed instance leaves no zombies."""

    async def refresh(self, entries: dict[str, set[str]], ttl: float) -> None:
        """Mark every ``session`` in ``entries[user_id]`` online from this instance."""

    async def remove(self, user_id: str, session_id: str) -> None:
        """This instance has no connection of the session any more."""

    async def online(self, user_id: str) -> set[str]:
        """Sessions online on any instance."""

    async def online_many(self, user_ids: Collection[str]) -> dict[str, set[str]]:
        """``online`` for several users at once (one round trip), keyed by user id."""
