"""``nursery cluster up --ha``'s Redis: a Redis Cluster whose masters each have a replica
(``_redis_cluster``: the options, ``redis-cli --cluster create --cluster-replicas 1``).

Redis Cluster fails over by itself: a master silent for the node timeout is replaced by its
replica, and the old master, restarted by the supervisor (not before its replica took over:
``Child.restart_delay``), rejoins as a replica. Which node is which is therefore Redis's
business; ``watch_roles`` keeps each node's current role ("master" / "replica") in the state
file, for ``cluster status``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import trio

from nursery.cluster import _redis_cluster as redis_cluster
from nursery.cluster._child import Child
from nursery.pubsub import resp

ROLE_POLL = 1.0  # seconds between looks at the nodes' roles
ROLE_TIMEOUT = 1.0


async def role_of(host: str, port: int) -> str | None:
    """"master" or "replica", as the node says now (``CLUSTER NODES``); None: no answer."""
    address = f"[{host}]" if ":" in host else host
    try:
        async with resp.Connection.open(f"redis://{address}:{port}", timeout=ROLE_TIMEOUT) as connection:
            nodes = await connection.call("CLUSTER", "NODES")
    except (resp.RedisError, OSError, trio.TooSlowError):
        return None
    return redis_cluster.own_role(nodes.decode()) if isinstance(nodes, bytes) else None


async def watch_roles(nodes: Sequence[Child], changed: Callable[[], None]) -> None:
    """Keep each node's role in ``child.info["role"]`` (None while it does not answer);
    ``changed()`` when one changes. Runs until cancelled."""
    async def look(child: Child, roles: dict[str, str | None]) -> None:
        roles[child.name] = await role_of(child.host, child.port)

    while True:
        roles: dict[str, str | None] = {}
        async with trio.open_nursery() as nursery:
            for child in nodes:
                nursery.start_soon(look, child, roles)
        dirty = False
        for child in nodes:
            if child.info.get("role") != roles[child.name]:
                child.info["role"] = roles[child.name]
                dirty = True
        if dirty:
            changed()
        await trio.sleep(ROLE_POLL)
