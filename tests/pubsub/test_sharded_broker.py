"""The broker on a real 3-master Redis Cluster, beyond the contract suite: each user's
channel lives on its slot's master, and losing (or moving) one shard refills only the users
whose channels it carried, while the others' messages keep flowing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING

import pytest
import trio

from nursery.errors import BrokerUnavailable
from nursery.pubsub import EVERYONE, Delivery, Followed, Message, Resubscribed
from nursery.pubsub.redis import PRESENCE_KEY, channel
from nursery.pubsub.redis_sharded import ShardedRedisBroker
from nursery.ratelimit.redis import KEY
from nursery.redis.resp import Client
from nursery.redis.resp_cluster import key_slot
from nursery.service.limits import write_key

if TYPE_CHECKING:
    from tests.servers import RedisCluster

TIMEOUT = 1.0
PING_INTERVAL = 0.25


def users_by_node(cluster: RedisCluster, per_node: int = 2) -> list[list[str]]:
    """For each node of ``cluster``, ``per_node`` user ids whose channels it serves."""
    wanted: list[list[str]] = [[] for _ in cluster.nodes]
    owners = {}  # slot → node index, asked once
    n = 0
    while any(len(users) < per_node for users in wanted):
        user = f"user-{n}"
        n += 1
        slot = key_slot(channel(user))
        if slot not in owners:
            owners[slot] = cluster.owner(slot)
        users = wanted[owners[slot]]
        if len(users) < per_node:
            users.append(user)
    return wanted


def everyone_node(cluster: RedisCluster) -> int:
    owner = cluster.owner(key_slot(channel(EVERYONE)))
    assert owner is not None
    return owner


@asynccontextmanager
async def brokers(url: str, n: int) -> AsyncIterator[list[ShardedRedisBroker]]:
    async with AsyncExitStack() as stack:
        yield [await stack.enter_async_context(
            ShardedRedisBroker.open(url, TIMEOUT, ping_interval=PING_INTERVAL)) for _ in range(n)]


class Inbox:
    def __init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[Delivery](10_000)

    def deliver(self, delivery: Delivery) -> None:
        if not isinstance(delivery, Followed):
            self._send.send_nowait(delivery)

    async def next(self) -> Delivery:
        return await self._receive.receive()

    def empty(self) -> bool:
        return self._receive.statistics().current_buffer_used == 0


async def subscribe(nursery: trio.Nursery, broker: ShardedRedisBroker, topics: list[str]) -> Inbox:
    inbox = Inbox()
    await nursery.start(broker.subscribe, inbox.deliver)
    for topic in topics:
        broker.follow(topic)
    while not all(broker.following(t) for t in topics):
        await trio.sleep(0.005)
    return inbox


async def shard_channels(url: str) -> set[bytes]:
    async with Client.open(url, timeout=TIMEOUT) as client:
        return set(await client.call("PUBSUB", "SHARDCHANNELS"))


async def test_each_users_channel_is_subscribed_on_the_master_of_its_slot_only(
    redis_cluster_url: str, redis_cluster: RedisCluster
) -> None:
    users = users_by_node(redis_cluster)
    with trio.fail_after(20):
        async with brokers(redis_cluster_url, 1) as [broker], trio.open_nursery() as nursery:
            await subscribe(nursery, broker, [u for node in users for u in node])
            home = everyone_node(redis_cluster)
            for index, url in enumerate(redis_cluster.urls):
                expected = {channel(u) for u in users[index]} | ({channel(EVERYONE)} if index == home else set())
                assert await shard_channels(url) == expected
            gone = users[0][0]
            broker.unfollow(gone)
            while channel(gone) in await shard_channels(redis_cluster.urls[0]):
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("stopped", [0, 1, 2])
async def test_a_shard_restart_refills_only_its_users_while_the_others_flow(
    redis_cluster_url: str, redis_cluster: RedisCluster, stopped: int
) -> None:
    users = users_by_node(redis_cluster, per_node=1)
    everyone = [EVERYONE] if everyone_node(redis_cluster) == stopped else []
    (lost,) = users[stopped]
    with trio.fail_after(40):
        async with brokers(redis_cluster_url, 2) as [a, b], trio.open_nursery() as nursery:
            await nursery.start(a.subscribe, lambda delivery: None)
            inbox = await subscribe(nursery, b, [u for node in users for u in node])
            try:
                await trio.to_thread.run_sync(redis_cluster.stop_node, stopped)
                while b.connected:
                    await trio.sleep(0.01)
                for index, (user,) in enumerate(users):
                    if index == stopped:
                        with pytest.raises(BrokerUnavailable):
                            await a.publish_many([(user, b"during")])
                    else:  # the other shards' users hear their messages throughout
                        await a.publish_many([(user, b"during")])
                        assert await inbox.next() == Message(user, b"during")
                assert inbox.empty()
            finally:
                await trio.to_thread.run_sync(redis_cluster.start_node, stopped)
            # only the users of the restarted shard refill: the message published to them
            # in between was lost, and the store has it
            assert await inbox.next() == Resubscribed(frozenset([lost, *everyone]))
            await a.publish_many([(lost, b"after")])
            assert await inbox.next() == Message(lost, b"after")
            assert b.reconnects == 1 and b.connected
            nursery.cancel_scope.cancel()


async def test_a_channel_whose_slot_moves_follows_it_to_the_new_master_and_refills(
    redis_cluster_url: str, redis_cluster: RedisCluster
) -> None:
    users = users_by_node(redis_cluster, per_node=1)
    (moving,), (staying,) = users[0], users[1]
    slot = key_slot(channel(moving))
    with trio.fail_after(30):
        async with brokers(redis_cluster_url, 2) as [a, b], trio.open_nursery() as nursery:
            await nursery.start(a.subscribe, lambda delivery: None)
            inbox = await subscribe(nursery, b, [moving, staying])
            try:
                redis_cluster.begin_slot_migration(slot, 2)
                redis_cluster.end_slot_migration(slot, 2)  # Redis unsubscribes b from it on node 0
                assert await inbox.next() == Resubscribed(frozenset([moving]))
                assert channel(moving) in await shard_channels(redis_cluster.urls[2])
                await a.publish_many([(moving, b"moved"), (staying, b"stayed")])  # a learns by MOVED
                assert {await inbox.next(), await inbox.next()} == {
                    Message(moving, b"moved"), Message(staying, b"stayed")}
                assert b.reconnects == 0
            finally:
                redis_cluster.begin_slot_migration(slot, 0)
                redis_cluster.end_slot_migration(slot, 0)
            nursery.cancel_scope.cancel()


async def test_a_broker_does_not_start_while_a_master_is_down(
    redis_cluster_url: str, redis_cluster: RedisCluster
) -> None:
    with trio.fail_after(30):
        await trio.to_thread.run_sync(redis_cluster.stop_node, 1)
        try:
            async with brokers(redis_cluster_url, 1) as [broker], trio.open_nursery() as nursery:
                began = trio.current_time()
                with pytest.raises(BrokerUnavailable, match="cannot subscribe"):
                    await nursery.start(broker.subscribe, lambda delivery: None)
                assert trio.current_time() - began < 2 * TIMEOUT + 0.5
        finally:
            await trio.to_thread.run_sync(redis_cluster.start_node, 1)


def test_a_users_channel_presence_and_write_counter_share_the_users_slot() -> None:
    user = "0b9f6a52-6f55-4b8e-9d1c-3c1e2f1d0a77"
    slots = {key_slot(channel(user)), key_slot(PRESENCE_KEY.format(user_id=user)),
             key_slot(KEY.format(key=write_key(user)))}
    assert slots == {key_slot(user)}
