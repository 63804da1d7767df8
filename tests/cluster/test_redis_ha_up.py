"""``nursery cluster up --ha``'s Redis, as an operator sees it (the database given by
NURSERY_DATABASE_URL, so no Patroni here: tests/cluster/test_ha_cluster.py runs that part):
a Redis Cluster of 3 masters each with a replica, every node's role in ``status`` and
``state.json``; the master serving a user's slot killed with -9 while a device listens through
Caddy and a writer writes: its replica is promoted, the device hears writes again within 5 s
and ends with every change, and the killed node, restarted by the supervisor, rejoins as a
replica."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from nursery.cluster import ClusterConfig, Supervisor, live_pids, read_state
from nursery.cluster import _redis_cluster as redis_cluster
from nursery.pubsub.redis import channel
from nursery.redis.resp_cluster import key_slot
from tests.cluster.support import RoamingDevice, Writer, free_port_block, report, require_caddy
from tests.cluster.test_cluster_cli import kill_everything
from tests.cluster.test_redis_cluster_up import cli, environment, status_json
from tests.harness import register
from tests.live import server_state
from tests.servers import free_port

LIVE_BACK_WITHIN = 5.0


def roles(info: dict[str, Any]) -> dict[str, str | None]:
    return {p["name"]: p.get("role") for p in info["processes"] if p["kind"] == "redis-node"}


def serves(probe: str, slot: int) -> bool:
    """Whether a node's probe ("cluster ok, master, 1 replica, slots 0-5460") names ``slot``."""
    _, found, ranges = probe.partition("slots ")
    for part in ranges.split() if found else []:
        first, _, last = part.partition("-")
        if int(first) <= slot <= int(last or first):
            return True
    return False


async def test_up_ha_runs_redis_with_a_replica_per_master_that_takes_over(
    tmp_path: Path, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    require_caddy()
    directory = tmp_path / "cluster"
    base, proxy = free_port_block(2), free_port()
    try:
        up = await cli(directory, "up", "--detach", "--ha", "--instances", "2",
                       "--base-port", str(base), "--proxy-port", str(proxy),
                       env={"NURSERY_DATABASE_URL": database_url}, timeout=150)
        assert up.returncode == 0, up.stderr.decode() + up.stdout.decode()
        with trio.fail_after(20):  # roles are polled every second
            while sorted(map(str, roles(info := await status_json(directory)).values())) != \
                    ["master"] * 3 + ["replica"] * 3:
                await trio.sleep(0.2)
        assert all(info["probes"].values()), info["probes"]
        probes = {name: info["probes"][name] for name in roles(info)}
        assert sum("master, 1 replica, slots" in p for p in probes.values()) == 3, probes
        assert sum(p == "cluster ok, replica, in sync" for p in probes.values()) == 3, probes
        table = (await cli(directory, "status")).stdout.decode()
        for name, role in roles(info).items():
            assert role in next(line for line in table.splitlines() if line.startswith(f"{name} "))
        pid = next(p["pid"] for p in info["processes"] if p["name"] == "instance-1")
        env = environment(pid)
        assert env["NURSERY_REDIS_CLUSTER"] == "true"
        assert env["NURSERY_REDIS_URL"] == info["redis_url"] == ",".join(  # every node: seeds
            f"redis://127.0.0.1:{p['port']}/0" for p in info["processes"] if p["kind"] == "redis-node")

        base_url = f"http://127.0.0.1:{proxy}"
        async with httpx.AsyncClient(timeout=10) as client, trio.open_nursery() as nursery:
            user = await register(client, base_url)
            slot = key_slot(channel(user.user_id))
            victim = next(name for name, probe in probes.items() if serves(probe or "", slot))
            process = next(p for p in info["processes"] if p["name"] == victim)
            device = RoamingDevice(user.token)
            await nursery.start(device.roam, base_url.replace("http", "ws") + "/ws")
            writer = Writer(client, base_url, user.headers)
            stop = trio.Event()
            nursery.start_soon(writer.run, stop, 0.1)
            with trio.fail_after(60):
                await trio.sleep(1.0)
                kill = trio.current_time()
                os.kill(process["pid"], signal.SIGKILL)
                while True:  # a change written after the kill reaches the device
                    after = [r for r, at in writer.issued_at.items() if at > kill and r in device.received_at]
                    if after:
                        back = min(device.received_at[r] for r in after) - kill
                        break
                    await trio.sleep(0.02)
                while True:  # its replica is a master; it is back, as a replica
                    info = await status_json(directory)
                    proc = next(p for p in info["processes"] if p["name"] == victim)
                    if proc["crashes"] == 1 and proc.get("role") == "replica" and info["probes"][victim]:
                        break
                    await trio.sleep(0.2)
                rejoined = trio.current_time() - kill
                assert sorted(map(str, roles(info).values())) == ["master"] * 3 + ["replica"] * 3
                stop.set()
                expected, rev = await server_state(client, base_url, user.headers)
                while device.rev < rev and device.broken is None:
                    await trio.sleep(0.02)
            assert device.broken is None, device.broken
            assert device.todos == expected and writer.failed == 0, writer.failures
            nursery.cancel_scope.cancel()
        report(capsys, "cluster up --ha, a Redis master killed", {
            "live_back_s": round(back, 2), "rejoined_as_replica_s": round(rejoined, 1),
            "writes": writer.operations, "responses": dict(writer.statuses)})
        assert back < LIVE_BACK_WITHIN

        down = await cli(directory, "down", timeout=60)
        assert down.returncode == 0, down.stderr.decode()
        assert live_pids(read_state(directory) or {}) == []
    finally:
        kill_everything(directory)


NODES_SEEN_BY_A_PROMOTED_REPLICA = """\
4ad6f3d7 127.0.0.1:31403@25258 myself,master - 0 1796678327000 7 connected 0-5460
94ac9643 127.0.0.1:31744@21659 slave ffc74571 0 1796678327253 2 connected
c0b30081 127.0.0.1:30124@25071 slave 91563df5 0 1796678327052 3 connected
8bf80de3 127.0.0.1:30298@24813 slave,fail 4ad6f3d7 1796678320000 1796678327052 7 disconnected
91563df5 127.0.0.1:31522@28436 master - 0 1796678327253 3 connected 10923-16383
ffc74571 127.0.0.1:29820@22210 master - 0 1796678327052 2 connected 5461-10922
"""


def test_roles_and_replication_as_cluster_nodes_tells_them() -> None:
    """What ``status`` and the fixtures read: the answering node's role, and whether every
    master serving slots has a live replica (not here: the promoted one's is failing)."""
    assert redis_cluster.own_role(NODES_SEEN_BY_A_PROMOTED_REPLICA) == "master"
    as_replica = NODES_SEEN_BY_A_PROMOTED_REPLICA.replace("myself,master", "master").replace(
        "slave ffc74571", "myself,slave ffc74571")
    assert redis_cluster.own_role(as_replica) == "replica"
    assert not redis_cluster.replicated(NODES_SEEN_BY_A_PROMOTED_REPLICA)
    healed = NODES_SEEN_BY_A_PROMOTED_REPLICA.replace("slave,fail", "slave").replace(
        "disconnected", "connected")
    assert redis_cluster.replicated(healed)
    assert redis_cluster.describe_role([b"master", 10, [[b"127.0.0.1", b"7001", b"10"]]]) == \
        "master, 1 replica"
    assert redis_cluster.describe_role([b"slave", b"127.0.0.1", 7000, b"connected", 10]) == \
        "replica, in sync"
    assert redis_cluster.describe_role([b"slave", b"127.0.0.1", 7000, b"sync", -1]) is None


def test_ha_with_an_external_database_plans_six_redis_nodes_and_names_them_all(tmp_path: Path) -> None:
    config = ClusterConfig.from_env({"NURSERY_DATABASE_URL": "postgresql://db/nursery"},
                                    directory=tmp_path, instances=2, ha=True)
    supervisor = Supervisor(config, tmp_path, "postgresql://db/nursery", {"external": True})
    supervisor.plan("secret")
    nodes = [c for c in supervisor.children if c.kind == "redis-node"]
    assert [c.kind for c in supervisor.children if c.kind not in ("redis-node",)] == \
        ["instance", "instance", "caddy"]  # the database is given: no Patroni
    assert len(nodes) == 6 and all(c.restart_delay >= 3.0 and "role" in c.info for c in nodes)
    assert all("--cluster-node-timeout" in c.argv and
               c.argv[c.argv.index("--cluster-node-timeout") + 1] == str(redis_cluster.NODE_TIMEOUT_MS)
               for c in nodes)
    for instance in supervisor.instances:
        assert instance.env["NURSERY_REDIS_CLUSTER"] == "true"
        assert instance.env["NURSERY_REDIS_URL"].split(",") == [
            f"redis://127.0.0.1:{c.port}/0" for c in nodes]
