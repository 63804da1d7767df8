"""The faults of a ``nursery cluster up --ha`` deployment (etcd + 3 PostgreSQL nodes under
Patroni), for the fault table (bench/faults.py --ha) and tests/cluster/test_ha_cluster.py;
each runs under the load of ``tests.cluster.faults.run_case`` and returns
``(injected_at, back_at)`` in trio time, back being when a primary runs again.

| fault | what it does | back when |
|---|---|---|
| ``node_lost`` | the primary's PostgreSQL SIGKILLed and its Patroni SIGSTOPped (a dead machine: nothing of it answers, and the supervisor, seeing Patroni alive, does not restart it); once another node is the primary, Patroni is SIGKILLed and the supervisor starts it again | another node is the running primary |
| ``node_hung`` | the primary's Patroni and every PostgreSQL process of it SIGSTOPped ``HUNG`` s, then SIGCONT | another node is the running primary, and the old one is a replica again |
| ``switchover`` | ``nursery cluster switchover`` | the command returns |
| ``redis_master_lost`` | the Redis master serving the load's user SIGSTOPped (a dead machine the supervisor does not restart: killed, it would be back on its ports before its replica took over); once its replica serves the slot, SIGKILLed (the supervisor restarts it: it rejoins as a replica) | another node serves the user's slot |

While a fault runs, the nodes' roles are polled: ``primaries_seen`` is the largest number of
nodes that called themselves the running primary at once (must stay 1).
"""

from __future__ import annotations

import json
import os
import signal
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from nursery.cluster import _patroni
from nursery.pubsub.redis import channel
from nursery.redis.resp_cluster import key_slot
from tests.cluster.load import Load
from tests.cluster.support import RunningCluster
from tests.ha_servers import kill_tree
from tests.servers import RedisServer, slot_owner

HUNG = 30.0  # seconds the primary's node stays stopped (the figure)
BACK_TIMEOUT = 120.0


@dataclass
class HADeployment:
    cluster: RunningCluster
    primaries_seen: int = 0
    notes: list[str] = field(default_factory=list)

    def nodes(self) -> list[dict[str, Any]]:
        return [p for p in self.cluster.state()["processes"] if p["kind"] == "patroni"]

    def members(self) -> list[_patroni.Member]:
        for node in self.nodes():
            try:
                return _patroni.members(f"http://{node['host']}:{node['api_port']}", 1.0)
            except _patroni.PatroniError:
                continue
        return []

    def leader(self) -> str | None:
        return next((m.name for m in self.members() if m.primary and m.state == "running"), None)

    def healthy(self) -> bool:
        """Every node runs, one is the leader, one its synchronous standby (Patroni promotes
        only a node recorded as synchronous: a fault before one is recorded would leave no
        node allowed to take over, by design)."""
        members = [m for m in self.members() if m.state in ("running", "streaming")]
        return (len(members) == len(self.nodes()) and sum(m.primary for m in members) == 1
                and any(m.role == "sync_standby" for m in members))

    def node(self, name: str) -> dict[str, Any]:
        return next(n for n in self.nodes() if n["name"] == name)

    def postmaster(self, name: str) -> int | None:
        data = Path(self.cluster.state()["supervisor"]["directory"]) / "ha" / name / "data"
        try:
            return int((data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None


async def _watch_primaries(deployment: HADeployment) -> None:
    """Every node asked for its own view (GET /patroni on each): how many say "master"."""
    while True:
        count = 0
        for node in deployment.nodes():
            answer = await trio.to_thread.run_sync(_patroni_role, node)
            count += answer == "master"
        deployment.primaries_seen = max(deployment.primaries_seen, count)
        await trio.sleep(0.2)


def _patroni_role(node: dict[str, Any]) -> str | None:
    try:
        with urllib.request.urlopen(f"http://{node['host']}:{node['api_port']}/patroni",
                                    timeout=0.5) as response:
            about = json.loads(response.read())
    except (OSError, ValueError):
        return None
    return str(about.get("role")) if about.get("state") == "running" else None


async def _until(condition: Any, what: str, timeout: float = BACK_TIMEOUT) -> None:
    with trio.fail_after(timeout):
        while not await trio.to_thread.run_sync(condition):
            await trio.sleep(0.1)


def _signal_tree(pid: int | None, signum: int) -> None:
    if pid is not None:
        kill_tree(pid, signum)


async def node_lost(deployment: HADeployment, load: Load) -> tuple[float, float]:
    await _until(deployment.healthy, "a healthy cluster")
    old = deployment.leader()
    assert old is not None, "no primary before the fault"
    patroni_pid = deployment.node(old)["pid"]
    async with trio.open_nursery() as watching:
        watching.start_soon(_watch_primaries, deployment)
        start = trio.current_time()
        os.kill(patroni_pid, signal.SIGSTOP)
        _signal_tree(deployment.postmaster(old), signal.SIGKILL)
        await _until(lambda: deployment.leader() not in (None, old), "a new primary")
        back = trio.current_time()
        os.kill(patroni_pid, signal.SIGKILL)  # the machine is replaced: the supervisor restarts it
        await _until(lambda: any(m.name == old and not m.primary and m.state in ("running", "streaming")
                                 for m in deployment.members()), "the old node as a standby")
        watching.cancel_scope.cancel()
    return start, back


async def node_hung(deployment: HADeployment, load: Load) -> tuple[float, float]:
    await _until(deployment.healthy, "a healthy cluster")
    old = deployment.leader()
    assert old is not None, "no primary before the fault"
    patroni_pid = deployment.node(old)["pid"]
    postmaster = deployment.postmaster(old)
    async with trio.open_nursery() as watching:
        watching.start_soon(_watch_primaries, deployment)
        start = trio.current_time()
        _signal_tree(patroni_pid, signal.SIGSTOP)
        _signal_tree(postmaster, signal.SIGSTOP)
        await _until(lambda: deployment.leader() not in (None, old), "a new primary")
        back = trio.current_time()
        await trio.sleep(max(0.0, HUNG - (back - start)))
        _signal_tree(postmaster, signal.SIGCONT)
        _signal_tree(patroni_pid, signal.SIGCONT)
        await _until(lambda: any(m.name == old and not m.primary and m.state in ("running", "streaming")
                                 for m in deployment.members()), "the old node as a standby")
        watching.cancel_scope.cancel()
    return start, back


async def switchover(deployment: HADeployment, load: Load) -> tuple[float, float]:
    await _until(deployment.healthy, "a healthy cluster")
    async with trio.open_nursery() as watching:
        watching.start_soon(_watch_primaries, deployment)
        start = trio.current_time()
        result = await deployment.cluster.cli("switchover", timeout=BACK_TIMEOUT)
        if result.returncode != 0:
            raise RuntimeError(f"nursery cluster switchover failed: {result.stderr.decode()}")
        back = trio.current_time()
        watching.cancel_scope.cancel()
    return start, back


def _redis_owner(deployment: HADeployment, slot: int) -> dict[str, Any] | None:
    """The running Redis Cluster node that serves ``slot``, as every answering node says."""
    nodes = [p for p in deployment.cluster.state()["processes"] if p["kind"] == "redis-node"]
    owners = set()
    ids: dict[str, dict[str, Any]] = {}
    for node in nodes:
        server = RedisServer(Path("/nonexistent"), port=node["port"])
        try:
            owners.add(slot_owner(server.text("CLUSTER", "NODES", timeout=0.5), slot))
            ids[server.text("CLUSTER", "MYID", timeout=0.5)] = node
        except OSError:
            continue
    if len(owners) != 1:
        return None
    (owner,) = owners
    return ids.get(owner or "")


async def redis_master_lost(deployment: HADeployment, load: Load) -> tuple[float, float]:
    slot = key_slot(channel(load.user.user_id))
    master = await trio.to_thread.run_sync(_redis_owner, deployment, slot)
    assert master is not None, "no Redis master for the user's slot"
    start = trio.current_time()
    os.kill(master["pid"], signal.SIGSTOP)

    def promoted() -> bool:
        owner = _redis_owner(deployment, slot)
        return owner is not None and owner["name"] != master["name"]

    await _until(promoted, "the replica promoted")
    back = trio.current_time()
    os.kill(master["pid"], signal.SIGKILL)
    return start, back


HA_FAULTS = {
    "pg-switchover": ("planned PostgreSQL switchover", switchover),
    "pg-node-lost": ("the primary's node lost (PostgreSQL SIGKILL, Patroni stopped)", node_lost),
    "pg-node-hung": (f"the primary's node hung {HUNG:g} s (SIGSTOP, then SIGCONT)", node_hung),
    "redis-master-lost": ("the Redis master of the user's slot lost (its replica present)",
                          redis_master_lost),
}
