"""The Redis broker and presence, on ``resp`` (a small Redis client on Trio: no asyncio).

Every command is bounded by ``timeout`` seconds (``resp``'s deadline); what a lost,
unreachable or silent Redis raises comes out as ``BrokerUnavailable``
(``unavailable_as_broker_error``, the one place).

Resource handling: ``RedisBroker`` owns a command client (PUBLISH, pipelined) and, while
``subscribe`` runs, the subscriber's connection; ``RedisPresence`` owns a command client. Both
are made by ``open`` context managers, which close them; the owner cancels ``subscribe`` (its
task lives in the caller's nursery) before leaving them.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Collection, Sequence
from contextlib import asynccontextmanager
from typing import Any, NoReturn

import trio

from nursery.errors import BrokerUnavailable
from nursery.logs import redact
from nursery.pubsub.broker import EVERYONE, Deliver, Followed, Message, Resubscribed
from nursery.redis import resp
from nursery.redis.resp_cluster import Commands, open_redis_client
from nursery.redis.subscription import ChannelSubscription, NotSubscribed

log = logging.getLogger(__name__)

PRESENCE_KEY = "nursery:presence:{{{user_id}}}"  # braces: the user's slot in a cluster


async def unavailable_as_broker_error[T](what: str, call: Awaitable[T]) -> T:
    """``call`` (bounded by the client's own timeout); a lost, unreachable or silent Redis
    becomes ``BrokerUnavailable``."""
    return await resp.translated(call, BrokerUnavailable, what)


class Deliveries:
    """What a ``ChannelSubscription`` hears, as the broker's deliveries (channels → topics)."""

    def __init__(self, deliver: Deliver) -> None:
        self._deliver = deliver

    def message(self, channel: bytes, payload: bytes) -> None:
        self._deliver(Message(topic_of(channel), payload))

    def followed(self, channels: set[bytes]) -> None:
        self._deliver(Followed(frozenset(map(topic_of, channels))))

    def resubscribed(self, channels: set[bytes]) -> None:
        self._deliver(Resubscribed(frozenset(map(topic_of, channels))))


async def run_subscription(subscription: ChannelSubscription, deliver: Deliver, **run: Any) -> NoReturn:
    """``subscription.run`` with the broker's deliveries; a failed start is ``BrokerUnavailable``."""
    try:
        await subscription.run(Deliveries(deliver), **run)
    except NotSubscribed as exc:
        raise BrokerUnavailable(str(exc)) from exc


def channel(topic: str) -> bytes:
    """The Redis channel of a topic. A user's is ``nursery:u:{<id>}``: the braces make its
    slot the user's, as for its presence key, in a Redis Cluster."""
    return b"nursery:*" if topic == EVERYONE else f"nursery:u:{{{topic}}}".encode()


def topic_of(name: bytes) -> str:
    return EVERYONE if name == b"nursery:*" else name[11:-1].decode()


class RedisBroker:
    """PUBLISH / SUBSCRIBE, a channel per followed topic (``channel``), on one Redis.

    One ``ChannelSubscription`` keeps the subscribed channels equal to the followed topics
    (in batches: a storm of new sockets is a few round trips, not one each). ``timeout``
    bounds every network wait; ``ping_interval``: see ``ChannelSubscription``.
    """

    def __init__(self, url: str, timeout: float, commands: resp.Client, *,
                 ping_interval: float = 1.0) -> None:
        self.url = redact(url)
        self.timeout = timeout
        self._commands = commands
        self._subscription = ChannelSubscription(
            url, self.url, timeout=timeout, ping_interval=ping_interval)
        self._subscription.want(channel(EVERYONE))

    @classmethod
    @asynccontextmanager
    async def open(cls, url: str, timeout: float, *, ping_interval: float = 1.0
                   ) -> AsyncIterator[RedisBroker]:
        async with resp.Client.open(url, timeout=timeout) as commands:
            yield cls(url, timeout, commands, ping_interval=ping_interval)

    @property
    def connected(self) -> bool:
        return self._subscription.connected

    @property
    def reconnects(self) -> int:
        return self._subscription.reconnects

    async def publish_many(self, messages: Sequence[tuple[str, bytes]]) -> None:
        """Every message in one pipeline: one write, one round trip."""
        if messages:
            commands = [("PUBLISH", channel(topic), payload) for topic, payload in messages]
            await unavailable_as_broker_error("PUBLISH", self._commands.pipeline(commands))

    def follow(self, topic: str) -> None:
        self._subscription.want(channel(topic))

    def unfollow(self, topic: str) -> None:
        if topic != EVERYONE:
            self._subscription.drop(channel(topic))

    def following(self, topic: str) -> bool:
        return self._subscription.heard(channel(topic))

    async def subscribe(
        self, deliver: Deliver, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Run the subscription until cancelled (``ChannelSubscription.run``): started once
        every followed channel is confirmed, ``BrokerUnavailable`` if that fails for
        ``timeout``; after a lost connection, ``Resubscribed(<every followed topic>)``."""
        await run_subscription(self._subscription, deliver, task_status=task_status)


class RedisPresence:
    """Presence in Redis: one sorted set per user (``nursery:presence:{user_id}``), member
    ``"{session_id}|{instance_id}"``, score = expiry as unix time. Entries of a crashed
    instance stop counting after ``ttl`` and the key itself expires after ``2 × ttl``
    without refreshes. Expiry uses each instance's wall clock: keep clocks in sync (NTP).
    """

    def __init__(self, url: str, timeout: float, commands: Commands, *,
                 instance_id: str | None = None) -> None:
        self.url = redact(url)
        self.timeout = timeout
        self.instance_id = instance_id or secrets.token_hex(8)
        self._commands = commands

    @classmethod
    @asynccontextmanager
    async def open(cls, url: str, timeout: float, *, cluster: bool = False
                   ) -> AsyncIterator[RedisPresence]:
        """``cluster``: ``url`` names a Redis Cluster node (each user's key on its slot's
        master)."""
        async with open_redis_client(url, timeout=timeout, cluster=cluster) as commands:
            yield cls(url, timeout, commands)

    async def refresh(self, entries: dict[str, set[str]], ttl: float) -> None:
        """Every entry in one pipeline (one round trip)."""
        expires = time.time() + ttl
        keep_ms = math.ceil(2 * ttl * 1000)
        commands: list[resp.Command] = []
        for user_id, sessions in entries.items():
            if sessions:
                key = PRESENCE_KEY.format(user_id=user_id)
                members = [x for s in sessions for x in (repr(expires), f"{s}|{self.instance_id}")]
                commands += [("ZADD", key, *members), ("PEXPIRE", key, keep_ms)]
        if not commands:
            await trio.lowlevel.checkpoint()
            return
        await self._run("presence refresh", commands)

    async def remove(self, user_id: str, session_id: str) -> None:
        key = PRESENCE_KEY.format(user_id=user_id)
        await self._run("presence remove", [("ZREM", key, f"{session_id}|{self.instance_id}")])

    async def online(self, user_id: str) -> set[str]:
        return (await self.online_many([user_id]))[user_id]

    async def online_many(self, user_ids: Collection[str]) -> dict[str, set[str]]:
        users = list(user_ids)
        now = repr(time.time())
        commands: list[resp.Command] = []
        for user_id in users:
            key = PRESENCE_KEY.format(user_id=user_id)
            commands += [("ZREMRANGEBYSCORE", key, "-inf", f"({now}"),  # crashed instances'
                         ("ZRANGEBYSCORE", key, now, "+inf")]
        replies = await self._run("presence read", commands)
        return {
            user_id: {member.rsplit(b"|", 1)[0].decode() for member in members}
            for user_id, members in zip(users, replies[1::2], strict=True)
        }

    async def _run(self, what: str, commands: list[resp.Command]) -> list[Any]:
        replies = await unavailable_as_broker_error(what, self._commands.pipeline(commands))
        refused = next((r for r in replies if isinstance(r, resp.ReplyError)), None)
        if refused is not None:
            raise BrokerUnavailable(f"redis {what} failed: {refused}")
        return replies
