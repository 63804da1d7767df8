"""The broker on a Redis Cluster with one replica per master (6 nodes, as ``nursery cluster
up --ha`` runs it): when a master is killed, Redis Cluster promotes its replica by itself
(after ``cluster-node-timeout``), and the broker follows: the users whose channels that master
carried are told to refill (``Resubscribed``: what was published while nobody served their
slot is lost, the store has it) and hear live messages again within 5 s; the other users'
messages flow throughout."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
import trio

from nursery.errors import BrokerUnavailable
from nursery.pubsub import EVERYONE, Message, Resubscribed
from nursery.pubsub.redis import channel
from nursery.redis.resp_cluster import key_slot
from tests.pubsub.test_sharded_broker import brokers, everyone_node, subscribe
from tests.servers import RedisCluster, scratch_dir

LIVE_AGAIN_WITHIN = 5.0  # the bound, from the kill to a live message delivered


@pytest.fixture(scope="module")
def replicated_cluster() -> Iterator[RedisCluster]:
    directory = scratch_dir("nursery-redis-replicas-")
    cluster = RedisCluster(directory, nodes=6, replicas=1)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(directory, ignore_errors=True)


def users_by_master(cluster: RedisCluster) -> dict[int, str]:
    """One user id per master (node index → user) whose channel that master serves."""
    found: dict[int, str] = {}
    n = 0
    while len(found) < 3:
        user = f"user-{n}"
        n += 1
        owner = cluster.owner(key_slot(channel(user)))
        if owner is not None and owner not in found:
            found[owner] = user
    return found


async def test_a_killed_master_is_replaced_by_its_replica_and_its_users_refill(
    replicated_cluster: RedisCluster,
) -> None:
    cluster = replicated_cluster
    users = users_by_master(cluster)
    victim = sorted(users)[0]
    lost = users[victim]
    everyone = [EVERYONE] if everyone_node(cluster) == victim else []
    with trio.fail_after(40):
        async with brokers(cluster.url, 2) as [a, b], trio.open_nursery() as nursery:
            await nursery.start(a.subscribe, lambda delivery: None)
            inbox = await subscribe(nursery, b, list(users.values()))
            killed_at = trio.current_time()
            await trio.to_thread.run_sync(cluster.nodes[victim].kill)
            refilled: set[str] = set()
            live_at: float | None = None
            n = 0
            # Publish to every user every 50 ms: the victim's fail (BrokerUnavailable) until
            # its replica is promoted, the others' go through throughout.
            while live_at is None:
                n += 1
                for index, user in users.items():
                    try:
                        await a.publish_many([(user, f"m{n}".encode())])
                    except BrokerUnavailable:
                        assert index == victim, "another master's users were cut off"
                with trio.move_on_after(0.05):
                    while True:
                        delivery = await inbox.next()
                        if isinstance(delivery, Resubscribed):
                            refilled |= delivery.topics or {*users.values(), EVERYONE}
                        elif isinstance(delivery, Message) and delivery.topic == lost and refilled:
                            live_at = trio.current_time()
                            break
            took = live_at - killed_at
            print(f"\nRedis master killed: live delivery to its users back after {took:.2f} s")
            assert took < LIVE_AGAIN_WITHIN
            assert {lost, *everyone} <= refilled  # told to refill the window they missed
            promoted = await trio.to_thread.run_sync(cluster.owner, key_slot(channel(lost)))
            assert promoted is not None and promoted != victim
            nursery.cancel_scope.cancel()
    # The old master comes back as a replica of the promoted one.
    await trio.to_thread.run_sync(cluster.start_node, victim)
