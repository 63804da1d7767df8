"""``nursery cluster up --ha`` (etcd + 3 PostgreSQL nodes under Patroni, a Redis Cluster of 3
masters with a replica each, 2 instances, Caddy)
under a steady load through Caddy (tests/cluster/faults.py's ``run_case``: devices roaming,
writers retrying with their Idempotency-Key):

- the nodes' roles are in ``state.json`` and ``cluster status``;
- a planned switchover: no write fails, none lost or duplicated, every device converged;
- the primary's node lost: writes succeed again within 15 s, none lost or duplicated, every
  device converged, never two primaries;
- a Redis master lost (its replica present: Redis Cluster promotes it): no device goes 5 s
  without a change, nothing lost, every device converged.

The hung primary (30 s) is in the fault table only (bench/faults.py --ha); the store's test
(tests/stores/test_postgres_failover.py) checks that a hung primary never takes a write.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from tests.cluster.faults import run_case
from tests.cluster.ha_faults import HADeployment, node_lost, redis_master_lost, switchover
from tests.cluster.support import RunningCluster, require_caddy, start_cluster
from tests.servers import scratch_dir

FAILOVER_BOUND = 15.0
REDIS_LIVE_AGAIN = 5.0  # the bound on live delivery after a Redis master is lost


@pytest.fixture(scope="module")
def ha_cluster() -> Iterator[RunningCluster]:
    require_caddy()
    directory: Path = scratch_dir("nursery-ha-cluster-")
    directory.chmod(0o755)  # PostgreSQL runs as the postgres user (as root: conftest's open_dir)
    cluster = start_cluster(directory / "cluster", instances=2, extra_args=("--ha",))
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(directory, ignore_errors=True)


async def test_status_shows_each_nodes_role(ha_cluster: RunningCluster) -> None:
    with trio.fail_after(30):
        while True:
            roles = sorted(str(p.get("role")) for p in ha_cluster.state()["processes"]
                           if p["kind"] == "patroni")
            if roles == ["leader", "replica", "sync_standby"]:
                break
            await trio.sleep(0.1)
        result = await ha_cluster.cli("status", "--json")
    assert result.returncode == 0, result.stdout.decode()
    status = json.loads(result.stdout)
    assert {p["kind"] for p in status["processes"]} >= {"etcd", "patroni", "instance", "caddy"}
    assert all(status["probes"][p["name"]] for p in status["processes"])
    table = (await ha_cluster.cli("status")).stdout.decode()
    assert "leader" in table and "sync_standby, lag" in table


async def test_a_switchover_under_load_fails_no_write(ha_cluster: RunningCluster) -> None:
    deployment = HADeployment(ha_cluster)
    old = await trio.to_thread.run_sync(deployment.leader)
    with trio.fail_after(120):
        figures = await run_case(deployment, switchover)  # type: ignore[arg-type]
    print(f"\nswitchover: {figures}")
    assert await trio.to_thread.run_sync(deployment.leader) not in (None, old)
    assert figures["clean"], figures
    assert deployment.primaries_seen == 1


async def test_the_loss_of_the_primarys_node(ha_cluster: RunningCluster) -> None:
    deployment = HADeployment(ha_cluster)
    with trio.fail_after(150):
        figures = await run_case(deployment, node_lost)  # type: ignore[arg-type]
    print(f"\nnode lost: {figures}")
    assert figures["lost"] == figures["duplicates"] == figures["unexpected"] == 0, figures
    assert figures["devices_converged"], figures
    assert figures["recovered_s"] < FAILOVER_BOUND, figures
    assert deployment.primaries_seen == 1


async def test_a_redis_master_lost_with_its_replica_present(ha_cluster: RunningCluster) -> None:
    deployment = HADeployment(ha_cluster)
    with trio.fail_after(90):
        figures = await run_case(deployment, redis_master_lost)  # type: ignore[arg-type]
    print(f"\nRedis master lost: {figures}")
    assert figures["clean"], figures
    assert figures["longest_device_gap_s"] < REDIS_LIVE_AGAIN, figures
