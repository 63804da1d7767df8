"""The broker: a doorbell with payload between the instances of one deployment.

Messages travel on topics: one per user (its id: its todo changes, its devices' logins and
presence) and ``EVERYONE`` (revocations, which every instance's session cache must hear). An
instance hears a user's topic only while it ``follow``s it: the hub follows a user while it
holds at least one of that user's sockets, so an instance's share of the broker's traffic
grows with its own users, not with the whole deployment's. ``EVERYONE`` is always followed.

It is at-most-once: a message published while a subscription is down is gone. So once a
subscription is back the broker says so (``Resubscribed``, naming the topics that may have
missed messages, or all) and their readers refill from the store, which is the truth. A topic
starts being heard once the broker confirms it (``Followed``): the hub makes a device that
connects meanwhile wait for that before it reads the store (the gap-free start), or refill
when a late confirmation comes. Messages are opaque bytes; the hub gives them meaning.

Implementations: ``memory.MemoryBroker`` (one process), ``redis.RedisBroker`` (many, one
Redis), ``redis_sharded.ShardedRedisBroker`` (many, a Redis Cluster: sharded pub/sub).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import NoReturn, Protocol

import trio

EVERYONE = "*"  # the topic every instance follows


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class Resubscribed:
    """A lost subscription is back: messages of ``topics`` (None: of every topic) published
    in between may be missing."""

    topics: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class Followed:
    """These topics are heard from now on (the broker confirmed their subscriptions)."""

    topics: frozenset[str]


Delivery = Message | Resubscribed | Followed
Deliver = Callable[[Delivery], None]


class Broker(Protocol):
    @property
    def connected(self) -> bool:
        """Whether the subscription is live right now (messages are arriving)."""

    async def publish_many(self, messages: Sequence[tuple[str, bytes]]) -> None:
        """Send each ``(topic, payload)`` to the instances that follow the topic, this one
        included, in order, in one round trip. Raises ``BrokerUnavailable`` when they could
        not be handed over within the broker timeout."""

    def follow(self, topic: str) -> None:
        """Hear ``topic`` from now on: confirmed by a ``Followed`` delivery. Does not block
        (subscriptions are made in batches by ``subscribe``'s task)."""

    def unfollow(self, topic: str) -> None:
        """Stop hearing ``topic`` (at most a few of its messages may still come)."""

    def following(self, topic: str) -> bool:
        """Whether ``topic``'s messages are heard now (confirmed)."""

    async def subscribe(
        self, deliver: Deliver, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Call ``deliver`` (synchronously, it must not block) for every message of a followed
        topic, and for ``Followed`` and ``Resubscribed``, until cancelled. Reconnects with
        backoff after losing the server. ``task_status.started()`` once ``EVERYONE`` is heard."""


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
