"""End to end on a real 3-master Redis Cluster: two instances, devices on one of them, a
shard restarted under them. The device whose user lives on that shard misses no update (its
subscription refills from the store once the shard is back); the other devices are served
live throughout."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
import trio

from nursery.pubsub.redis import channel
from nursery.redis.resp_cluster import key_slot
from tests.harness import User, hello, next_of_type, open_websocket_url, register, start_instance

if TYPE_CHECKING:
    from tests.servers import RedisCluster


async def test_a_device_misses_no_update_while_its_users_shard_restarts(
    database_url: str, redis_cluster_url: str, redis_cluster: RedisCluster
) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, httpx.AsyncClient() as client:
            cluster = {"redis_url": redis_cluster_url, "redis_cluster": True, "broker_timeout": 1.0}
            a = await start_instance(nursery, database_url, **cluster)
            b = await start_instance(nursery, database_url, **cluster)
            by_node: dict[int, User] = {}
            while len(by_node) < 2:  # two users on different shards
                user = await register(client, a.url)
                node = redis_cluster.owner(key_slot(channel(user.user_id)))
                assert node is not None
                by_node.setdefault(node, user)
            (stopped, lost), (_, live) = by_node.items()

            async with open_websocket_url(b.ws_url) as lost_ws, open_websocket_url(b.ws_url) as live_ws:
                await hello(lost_ws, lost.token, 0)
                await hello(live_ws, live.token, 0)
                await trio.to_thread.run_sync(redis_cluster.stop_node, stopped)
                try:
                    r = await client.post(f"{a.url}/api/todos", json={"title": "live"}, headers=live.headers)
                    assert r.status_code == 201
                    assert (await next_of_type(live_ws, "change"))["todo"]["id"] == r.json()["todo"]["id"]
                    r = await client.post(f"{a.url}/api/todos", json={"title": "kept"}, headers=lost.headers)
                    assert r.status_code == 201  # stored; its announcement is lost with the shard
                    kept = r.json()["todo"]["id"]
                finally:
                    await trio.to_thread.run_sync(redis_cluster.start_node, stopped)
                change = await next_of_type(lost_ws, "change", timeout=15)
                assert change["todo"]["id"] == kept and change["todo"]["title"] == "kept"
            nursery.cancel_scope.cancel()
