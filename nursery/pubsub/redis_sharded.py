"""The broker on a Redis Cluster: sharded pub/sub (SPUBLISH / SSUBSCRIBE, Redis 7).

A topic's channel sits in its user's slot (``channel``: ``nursery:u:{<id>}``, as the user's
presence key), so a user's messages pass through the one master that serves that slot, and
an instance subscribes on each master to the channels of its own users there only: the
pub/sub load spreads over the masters, and each instance hears its own users.

One ``ChannelSubscription`` per master holds the channels of the slots that master serves.
Losing a master refills only the users whose channels it served (``Resubscribed`` naming
them). When the slot map changes (a failover, a resharding: noticed as a lost subscription,
or as channels Redis unsubscribed on its own), the map is read again and channels move to
their new master, where their confirmation is a ``Resubscribed`` too (their messages may
have been missed on the way). A SSUBSCRIBE that meets a stale map is refused (``MOVED``):
that master's subscription starts over, which refills its users; resharding is rare.

Resource handling: ``ShardedRedisBroker.open`` owns the cluster client (SPUBLISH, pipelined
per master); while ``subscribe`` runs, its nursery owns one task per master subscription.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import NoReturn

import trio

from nursery.errors import BrokerUnavailable
from nursery.logs import redact
from nursery.pubsub.broker import EVERYONE, Deliver
from nursery.pubsub.redis import channel, run_subscription, unavailable_as_broker_error
from nursery.redis.resp import RECOVERABLE, reason
from nursery.redis.resp_cluster import ClusterClient, key_slot
from nursery.redis.subscription import ChannelSubscription, backoff_delays

log = logging.getLogger(__name__)

# Seconds between reads of the slot map while a master is lost: a replica is promoted about
# 3 s after (a 1.5 s node timeout), and each read adds up to this much to its users' outage.
RECHECK_WHILE_LOST = 0.25


class ShardedRedisBroker:
    """SPUBLISH / SSUBSCRIBE, a channel per followed topic, on a Redis Cluster.

    ``timeout`` bounds every network wait; ``ping_interval``: see ``ChannelSubscription``.
    ``connected``: every master's subscription is live; ``reconnects`` counts lost ones.
    """

    def __init__(self, url: str, timeout: float, commands: ClusterClient, *,
                 ping_interval: float = 1.0) -> None:
        self.url = redact(url)
        self.timeout = timeout
        self.ping_interval = ping_interval
        self._commands = commands
        self._topology = commands.topology
        self._shards: dict[str, ChannelSubscription] = {}  # by master URL
        self._scopes: dict[str, trio.CancelScope] = {}  # each shard's task
        # Followed channels whose master is not known yet, and whether they must refill.
        self._unplaced: dict[bytes, bool] = {channel(EVERYONE): False}
        self._stale = trio.Event()  # set: the slot map may have changed
        self._nursery: trio.Nursery | None = None  # subscribe's, once started
        self._deliver: Deliver | None = None
        self._retired_reconnects = 0  # of shards whose master left

    @classmethod
    @asynccontextmanager
    async def open(cls, url: str, timeout: float, *, ping_interval: float = 1.0
                   ) -> AsyncIterator[ShardedRedisBroker]:
        """``url``: any node of the cluster. Nothing is contacted before ``subscribe`` or
        the first publish."""
        async with ClusterClient.open(url, timeout=timeout) as commands:
            yield cls(url, timeout, commands, ping_interval=ping_interval)

    @property
    def connected(self) -> bool:
        return bool(self._shards) and not self._unplaced and all(
            shard.connected for shard in self._shards.values())

    @property
    def reconnects(self) -> int:
        return self._retired_reconnects + sum(s.reconnects for s in self._shards.values())

    async def publish_many(self, messages: Sequence[tuple[str, bytes]]) -> None:
        """One pipeline per master, all at once: one round trip."""
        if messages:
            commands = [("SPUBLISH", channel(topic), payload) for topic, payload in messages]
            await unavailable_as_broker_error("SPUBLISH", self._commands.pipeline(commands))

    def follow(self, topic: str) -> None:
        self._place(channel(topic), refill=False)

    def unfollow(self, topic: str) -> None:
        if topic == EVERYONE:
            return
        name = channel(topic)
        self._unplaced.pop(name, None)
        for shard in self._shards.values():
            if name in shard.wanted:
                shard.drop(name)

    def following(self, topic: str) -> bool:
        name = channel(topic)
        return any(shard.heard(name) for shard in self._shards.values())

    async def subscribe(
        self, deliver: Deliver, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Learn the slot map, subscribe on every master, then keep the subscriptions on
        the masters the map names until cancelled.

        ``task_status.started()`` once every master confirmed its channels; raises
        ``BrokerUnavailable`` if the map cannot be learnt, or a master not subscribed,
        within ``timeout``. Afterwards see ``ChannelSubscription.run``: a master's lost
        subscription is retried forever, then refills the topics it carries.
        """
        self._deliver = deliver
        try:
            await self._topology.refresh()
        except RECOVERABLE as exc:
            raise BrokerUnavailable(f"cannot learn the slots of {self.url}: {reason(exc)}") from exc
        self._rebalance()
        failure: BrokerUnavailable | None = None
        try:
            async with trio.open_nursery() as nursery:
                try:
                    for shard in list(self._shards.values()):
                        await nursery.start(self._run_shard, shard, True)
                except BrokerUnavailable as exc:
                    failure = exc
                    nursery.cancel_scope.cancel()
                else:
                    self._nursery = nursery
                    task_status.started()
                    await self._follow_the_slot_map()
        finally:
            self._nursery = None
        assert failure is not None  # the loop above returns only by raising
        raise failure

    async def _run_shard(self, shard: ChannelSubscription, fresh: bool, *,
                         task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        assert self._deliver is not None
        with trio.CancelScope() as self._scopes[shard.url]:
            await run_subscription(shard, self._deliver, fresh=fresh, on_evicted=self._evicted,
                                   on_lost=self._stale.set, task_status=task_status)

    def _place(self, name: bytes, *, refill: bool) -> None:
        """Want ``name`` on the master of its slot; unplaced (until the map is read again)
        if that master has no subscription yet."""
        url = self._topology.node_for(key_slot(name))
        shard = self._shards.get(url) if url is not None else None
        if shard is None:
            self._unplaced[name] = self._unplaced.get(name, False) or refill
            self._stale.set()
        else:
            shard.want(name, refill=refill)

    def _evicted(self, names: set[bytes]) -> None:
        """Redis unsubscribed these on its own: their slot moved."""
        for name in names:
            self._unplaced[name] = True
        self._stale.set()

    async def _follow_the_slot_map(self) -> NoReturn:
        """Read the slot map again when it may have changed (and every
        ``RECHECK_WHILE_LOST`` seconds while a master is lost: a replica may take over),
        and move channels to their masters."""
        delays = backoff_delays()
        while True:
            with trio.move_on_after(math.inf if self.connected else RECHECK_WHILE_LOST):
                await self._stale.wait()
            self._stale = trio.Event()
            try:
                await self._topology.refresh()
            except RECOVERABLE as exc:
                log.warning("cannot read the slots of %s: %s", self.url, reason(exc))
                self._stale.set()
                await trio.sleep(next(delays))
                continue
            self._rebalance()
            if self._unplaced:  # slots that no master serves (yet): read the map again, later
                self._stale.set()
                await trio.sleep(next(delays))
            else:
                delays = backoff_delays()

    def _rebalance(self) -> None:
        """A subscription per master of the map; every channel on its slot's master."""
        masters = self._topology.masters
        for url, shard in list(self._shards.items()):
            moved = {name for name in shard.wanted if self._topology.node_for(key_slot(name)) != url}
            if moved:
                shard.forget(moved)
                for name in moved:
                    self._unplaced[name] = True
            if url not in masters:  # no longer a master: its channels moved above
                log.info("no longer subscribing on %s: it serves no slots", redact(url))
                self._retired_reconnects += shard.reconnects
                del self._shards[url]
                self._scopes.pop(url, trio.CancelScope()).cancel()
        for url in masters:
            if url not in self._shards:
                self._shards[url] = ChannelSubscription(
                    url, redact(url), timeout=self.timeout, ping_interval=self.ping_interval,
                    slot_of=key_slot)
                if self._nursery is not None:  # after startup: its first subscribe refills
                    self._nursery.start_soon(self._run_shard, self._shards[url], False)
        unplaced, self._unplaced = self._unplaced, {}
        for name, refill in unplaced.items():
            self._place(name, refill=refill)
