"""``resp_cluster`` against a real 3-master Redis Cluster (``redis_cluster`` from conftest):
slots as Redis computes them, commands and pipelines routed to every master and answered in
order, scripts per node, sharded pub/sub, a slot migrating under a client (ASK, then MOVED),
and one shard stopped and started again while the others keep working.

What is checked is what Redis itself says: CLUSTER KEYSLOT, where a key is found when each
node is asked directly, SCRIPT EXISTS on each node, a subscriber on the owner node.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import pytest
import trio

from nursery.errors import BrokerUnavailable
from nursery.pubsub.redis import unavailable_as_broker_error
from nursery.redis import resp
from nursery.redis.resp_cluster import (
    ClusterClient,
    ShardUnavailable,
    Topology,
    command_slot,
    key_slot,
    open_redis_client,
)

if TYPE_CHECKING:
    from tests.servers import RedisCluster

TIMEOUT = 1.0  # each network wait of the clients under test


@asynccontextmanager
async def cluster_client(url: str) -> AsyncIterator[ClusterClient]:
    async with ClusterClient.open(url, timeout=TIMEOUT) as client:
        await client.call("PING")  # learns the topology
        yield client


def node_url(cluster: RedisCluster, index: int) -> str:
    """A node's URL as the topology writes it (the cluster has no database but 0)."""
    return cluster.nodes[index].url.removesuffix("/0")


def keys_by_master(topology: Topology, per_master: int, prefix: str = "key") -> dict[str, list[str]]:
    """``per_master`` keys served by each master, by the topology's word (checked against
    the nodes themselves by the tests that use them)."""
    found: dict[str, list[str]] = {url: [] for url in topology.masters}
    i = 0
    while any(len(keys) < per_master for keys in found.values()):
        key = f"{prefix}:{i}"
        owner = topology.node_for(key_slot(key))
        assert owner is not None
        if len(found[owner]) < per_master:
            found[owner].append(key)
        i += 1
    return found


async def test_key_slot_agrees_with_cluster_keyslot(redis_cluster_url: str) -> None:
    rng = random.Random(17)
    keys: list[bytes | str] = [
        "", "a", "123456789", "user:42", "nursery:presence:{u1}", "{u1}:rate", "{}", "{", "}",
        "}{", "{}{a}", "{a}{b}", "a{b}c", "a{b", "{{a}}", "{a}}", "}{a}", "{ }", "é{ü}", "{é}ü",
        b"\x00\xff{\x01}", b"{\xfe\xff}x",
    ]
    keys += ["".join(rng.choice("ab{}:xé") for _ in range(rng.randint(0, 12))) for _ in range(300)]
    keys += [rng.randbytes(rng.randint(0, 20)) for _ in range(200)]
    with trio.fail_after(10):
        async with cluster_client(redis_cluster_url) as client:
            answers = await client.pipeline([("CLUSTER", "KEYSLOT", key) for key in keys])
    assert [key_slot(key) for key in keys] == answers
    assert key_slot("123456789") == 0x31C3  # CRC16/XMODEM's check value (< 16384)
    assert key_slot("{user1000}.following") == key_slot("{user1000}.followers")


def test_a_command_is_routed_by_its_key() -> None:
    assert command_slot(("GET", "{u1}:a")) == key_slot("u1")
    assert command_slot((b"spublish", "nursery:{u1}", b"x")) == key_slot("u1")
    assert command_slot(("EVALSHA", "abc", 2, "{u2}:a", "{u2}:b", "arg")) == key_slot("u2")
    assert command_slot(("EVAL", "return 1", "0", "arg")) is None  # no key: any master
    assert command_slot(("PING",)) is None


async def test_commands_and_pipelines_over_every_master_come_back_in_order(
    redis_cluster_url: str,
) -> None:
    with trio.fail_after(10):
        async with cluster_client(redis_cluster_url) as client:
            assert len(client.topology.masters) == 3
            by_master = keys_by_master(client.topology, 5)
            keys = [key for group in zip(*by_master.values(), strict=True) for key in group]
            assert len(keys) == 15  # interleaved: consecutive commands go to different masters

            assert await client.pipeline([("SET", key, f"value of {key}") for key in keys]) == [b"OK"] * 15
            commands: list[resp.Command] = []
            for key in keys:
                commands += [("GET", key), ("INCR", key), ("APPEND", key, "!")]
            replies = await client.pipeline(commands)
            assert replies[0::3] == [f"value of {key}".encode() for key in keys]
            refused = replies[1::3]  # INCR of a text: refused, in its place, the others ran
            assert all(isinstance(r, resp.ReplyError) and "not an integer" in str(r) for r in refused)
            assert replies[2::3] == [len(f"value of {key}!") for key in keys]
            assert await client.call("GET", keys[-1]) == f"value of {keys[-1]}!".encode()
            with pytest.raises(resp.ReplyError, match="not an integer"):
                await client.call("INCR", keys[0])

            # Each key is where the topology said: asked directly, its master has it.
            for url, group in by_master.items():
                async with resp.Client.open(url, timeout=TIMEOUT) as node:
                    assert await node.pipeline([("GET", key) for key in group]) == [
                        f"value of {key}!".encode() for key in group]

            # Keys of one command in two slots: Redis refuses, and so do we.
            first, second = (group[0] for group in list(by_master.values())[:2])
            with pytest.raises(resp.ReplyError, match="CROSSSLOT"):
                await client.call("MGET", first, second)
            assert await client.call("MGET", "{t}a", "{t}b") == [None, None]  # one slot: fine


SCRIPT = "return {redis.call('INCRBY', KEYS[1], ARGV[1]), redis.call('INCR', KEYS[2])}"


async def test_scripts_run_on_every_master_loaded_once_per_node(redis_cluster_url: str) -> None:
    with trio.fail_after(10):
        async with cluster_client(redis_cluster_url) as client:
            by_master = keys_by_master(client.topology, 1, prefix="tag")
            tags = [group[0] for group in by_master.values()]
            for tag in tags:  # NOSCRIPT on each node, then EVAL there
                assert await client.script(SCRIPT, [f"{{{tag}}}:a", f"{{{tag}}}:b"], [5]) == [5, 1]
            for tag in tags:  # by hash this time
                assert await client.script(SCRIPT, [f"{{{tag}}}:a", f"{{{tag}}}:b"], [5]) == [10, 2]
            sha = resp.script_sha(SCRIPT)
            for url in by_master:
                async with resp.Client.open(url, timeout=TIMEOUT) as node:
                    assert await node.call("SCRIPT", "EXISTS", sha) == [1]
            with pytest.raises(resp.ReplyError, match="CROSSSLOT|different slots"):
                await client.script(SCRIPT, [f"{{{tags[0]}}}:a", f"{{{tags[1]}}}:b"], [1])


async def test_spublish_reaches_a_sharded_subscriber_on_the_owner(redis_cluster_url: str) -> None:
    with trio.fail_after(10):
        async with cluster_client(redis_cluster_url) as client:
            by_master = keys_by_master(client.topology, 1, "events")
            channels = [group[0].encode() for group in by_master.values()]
            for channel in channels:
                owner = client.topology.node_for(key_slot(channel))
                assert owner is not None
                async with resp.Subscriber.open(
                    owner, [channel], timeout=TIMEOUT, sharded=True
                ) as subscriber:
                    assert await client.call("SPUBLISH", channel, b"hello " + channel) == 1  # receivers
                    received: list[tuple[bytes, bytes]] = []
                    while not received:
                        received += await subscriber.messages()
                    assert received == [(channel, b"hello " + channel)]


async def test_a_migrating_slot_is_followed_by_ask_then_moved(
    redis_cluster: RedisCluster, redis_cluster_url: str
) -> None:
    key = "{migrating}:k"
    slot = key_slot(key)
    source = redis_cluster.owner(slot)
    assert source is not None
    target = (source + 1) % 3
    with trio.fail_after(20):
        async with cluster_client(redis_cluster_url) as client:
            assert client.topology.node_for(slot) == node_url(redis_cluster, source)
            await client.call("SET", key, "here")
            try:
                # Half way: the key has moved, the slot not yet. The old owner answers ASK.
                await trio.to_thread.run_sync(redis_cluster.begin_slot_migration, slot, target)
                await trio.to_thread.run_sync(redis_cluster.move_keys, slot, target, [key])
                assert await client.call("GET", key) == b"here"
                assert await client.pipeline([("GET", key), ("EXISTS", key)]) == [b"here", 1]
                assert client.topology.node_for(slot) == node_url(redis_cluster, source)

                # Done: the old owner answers MOVED; the client learns the new owner.
                await trio.to_thread.run_sync(redis_cluster.end_slot_migration, slot, target)
                assert await client.call("GET", key) == b"here"
                assert client.topology.node_for(slot) == node_url(redis_cluster, target)
                assert await client.call("SET", key, "still here") == b"OK"
            finally:
                await trio.to_thread.run_sync(redis_cluster.reset_slot, slot, source)
            # And back (flushed): a client whose topology is now stale follows MOVED again.
            assert await client.pipeline([("SET", key, "back"), ("GET", key)]) == [b"OK", b"back"]
            assert client.topology.node_for(slot) == node_url(redis_cluster, source)


async def test_a_stopped_shard_fails_fast_its_commands_only_and_serves_again_once_back(
    redis_cluster: RedisCluster, redis_cluster_url: str
) -> None:
    victim = 1
    victim_url = node_url(redis_cluster, victim)
    with trio.fail_after(40):
        async with cluster_client(redis_cluster_url) as client:
            by_master = keys_by_master(client.topology, 3)
            lost_keys = by_master[victim_url]
            kept_keys = [key for url, keys in by_master.items() if url != victim_url for key in keys]
            stopped, back = trio.Event(), trio.Event()
            served_while_down = 0

            async def the_other_shards_keep_working() -> None:
                nonlocal served_while_down
                n = 0
                while not back.is_set():
                    n += 1
                    assert await client.pipeline([("SET", key, n) for key in kept_keys]) == [b"OK"] * 6
                    if stopped.is_set():
                        served_while_down += 1
                    await trio.sleep(0.01)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(the_other_shards_keep_working)
                await trio.to_thread.run_sync(redis_cluster.stop_node, victim)
                stopped.set()

                began = trio.current_time()
                with pytest.raises(ShardUnavailable, match="not delivered"):
                    await client.call("SET", lost_keys[0], "x")
                assert trio.current_time() - began < TIMEOUT  # refused at once, not timed out
                with pytest.raises(BrokerUnavailable):
                    await unavailable_as_broker_error("test", client.call("GET", lost_keys[0]))

                # A pipeline over every shard: the lost shard's commands fail, the others run.
                keys = [*lost_keys, *kept_keys]
                with pytest.raises(ShardUnavailable) as failure:
                    await client.pipeline([("SET", key, "during") for key in keys])
                assert failure.value.failed == [0, 1, 2]
                assert all(isinstance(r, resp.ConnectionLost) for r in failure.value.replies[:3])
                assert failure.value.replies[3:] == [b"OK"] * 6

                await trio.to_thread.run_sync(redis_cluster.start_node, victim)
                # Back, with its slots and without its data (nothing is persisted).
                assert await client.pipeline([("GET", key) for key in lost_keys]) == [None] * 3
                assert await client.call("SET", lost_keys[0], "after") == b"OK"
                assert await client.call("GET", lost_keys[0]) == b"after"
                back.set()
            assert served_while_down > 0


async def test_a_command_finds_its_slot_taken_over_while_its_old_master_is_down(
    redis_cluster: RedisCluster, redis_cluster_url: str
) -> None:
    """As after a failover: the client still names the stopped node, which refuses the
    connection; it refreshes the topology and sends the command to the new owner."""
    victim, heir = 1, 0
    with trio.fail_after(40):
        async with cluster_client(redis_cluster_url) as client:
            key = keys_by_master(client.topology, 1)[node_url(redis_cluster, victim)][0]
            slot = key_slot(key)
            await trio.to_thread.run_sync(redis_cluster.stop_node, victim)
            try:
                await trio.to_thread.run_sync(redis_cluster.take_over_slot, slot, heir)
                assert client.topology.node_for(slot) == node_url(redis_cluster, victim)  # stale
                assert await client.call("SET", key, "taken over") == b"OK"
                assert client.topology.node_for(slot) == node_url(redis_cluster, heir)
                async with resp.Client.open(node_url(redis_cluster, heir), timeout=TIMEOUT) as node:
                    assert await node.call("GET", key) == b"taken over"
            finally:
                await trio.to_thread.run_sync(redis_cluster.start_node, victim)
                await trio.to_thread.run_sync(redis_cluster.reset_slot, slot, victim)


async def test_a_slot_no_node_serves_is_unavailable_not_refused(
    redis_cluster: RedisCluster, redis_cluster_url: str
) -> None:
    """CLUSTERDOWN (a node not serving the slot right now, as while one restarts) fails the
    command like an unreachable node: ShardUnavailable, so the caller treats it as an outage."""
    with trio.fail_after(20):
        async with cluster_client(redis_cluster_url) as client:
            by_master = keys_by_master(client.topology, 1)
            key, other = by_master[node_url(redis_cluster, 2)][0], by_master[node_url(redis_cluster, 0)][0]
            slot, owner = key_slot(key), 2
            try:
                for node in redis_cluster.nodes:
                    deleted = await trio.to_thread.run_sync(node.command, "CLUSTER", "DELSLOTS", str(slot))
                    assert deleted == b"+OK"
                with pytest.raises(ShardUnavailable, match="CLUSTERDOWN") as failure:
                    await client.pipeline([("SET", key, "x"), ("SET", other, "y")])
                assert failure.value.failed == [0] and failure.value.replies[1] == b"OK"
            finally:
                await trio.to_thread.run_sync(redis_cluster.reset_slot, slot, owner)


async def test_an_unreachable_seed_fails_within_the_timeout() -> None:
    from tests.servers import free_port

    with trio.fail_after(5):
        async with ClusterClient.open(f"redis://127.0.0.1:{free_port()}", timeout=TIMEOUT) as client:
            with pytest.raises(resp.ConnectionLost, match="cannot learn the Redis Cluster's slots"):
                await client.call("GET", "k")


@pytest.mark.parametrize("cluster", [True, False], ids=["cluster", "single"])
async def test_open_redis_client_gives_the_same_interface_either_way(
    cluster: bool, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("redis_cluster_url" if cluster else "redis_url")
    with trio.fail_after(10):
        async with open_redis_client(url, timeout=TIMEOUT, cluster=cluster) as client:
            assert isinstance(client, ClusterClient) == cluster
            keys = [f"user:{i}" for i in range(10)]
            assert await client.pipeline([("SET", key, key) for key in keys]) == [b"OK"] * 10
            assert await client.pipeline([("GET", key) for key in keys]) == [k.encode() for k in keys]
            assert await client.script("return redis.call('GET', KEYS[1])", ["user:3"], []) == b"user:3"
            assert await client.call("PING") == b"PONG"
