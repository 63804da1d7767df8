"""Messages between instances (the broker) and who is online (presence): the brokers only.

    broker          the interface (``Broker``, ``Presence``) and what a broker delivers
    memory          one process
    redis           one Redis (PUBLISH / SUBSCRIBE), and presence in Redis
    redis_sharded   a Redis Cluster (SPUBLISH / SSUBSCRIBE, a subscription per master)
    events          what the brokers carry (todo, session and presence changes)

``open_broker(settings)`` picks the backend by ``settings.redis_url``: unset → in-process
(``memory``), else Redis (``redis://`` or ``rediss://``: ``Settings`` refuses any other), on
Trio's own sockets (``nursery.redis``: no asyncio loop is needed). The hub that hands the
deliveries to this process's sockets is the service's (``service/hub.py``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from nursery.config import Settings
from nursery.pubsub.broker import EVERYONE as EVERYONE
from nursery.pubsub.broker import Broker as Broker
from nursery.pubsub.broker import Deliver as Deliver
from nursery.pubsub.broker import Delivery as Delivery
from nursery.pubsub.broker import Followed as Followed
from nursery.pubsub.broker import Message as Message
from nursery.pubsub.broker import Presence as Presence
from nursery.pubsub.broker import Resubscribed as Resubscribed
from nursery.pubsub.memory import MemoryBroker as MemoryBroker
from nursery.pubsub.memory import MemoryPresence as MemoryPresence


@asynccontextmanager
async def open_broker(settings: Settings) -> AsyncIterator[tuple[Broker, Presence]]:
    """Yield ``(broker, presence)`` for ``settings`` and close both on exit: in this
    process without ``redis_url``; on a Redis Cluster (sharded pub/sub) with ``redis_cluster``.

    The caller owns the tasks: run ``broker.subscribe`` in a nursery *inside* this block, so
    that it is cancelled before the broker closes. Nothing is contacted on entry: an
    unreachable Redis shows up as ``BrokerUnavailable`` from the first ``subscribe``.
    """
    url = settings.redis_url
    if not url:
        memory_broker, memory_presence = MemoryBroker(), MemoryPresence()
        try:
            yield memory_broker, memory_presence
        finally:
            await memory_presence.aclose()
            await memory_broker.aclose()
        return

    from nursery.pubsub.redis import RedisBroker, RedisPresence
    from nursery.pubsub.redis_sharded import ShardedRedisBroker

    timeout, cluster = settings.broker_timeout, settings.redis_cluster
    async with (
        ShardedRedisBroker.open(url, timeout) if cluster else RedisBroker.open(url, timeout) as broker,
        RedisPresence.open(url, timeout, cluster=cluster) as presence,
    ):
        yield broker, presence

