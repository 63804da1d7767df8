"""``nursery cluster up --redis-cluster``, as an operator uses it: the topology runs on a
3-master Redis Cluster of its own; ``status`` shows each node serving its share of the slots;
the instances are told the seed and that it is a cluster; a sign-up, a login and a todo write
go through Caddy; a node killed with -9 is restarted and rejoins with its slots; ``down``
stops everything."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import httpx
import trio

from nursery.cluster import ClusterConfig, Supervisor, format_status, live_pids, read_state
from tests.cluster.support import PYTHON, cluster_env, free_port_block, require_caddy
from tests.cluster.test_cluster_cli import kill_everything, port_open
from tests.harness import login, register
from tests.servers import free_port

SLOTS = {"redis-1": "0-5460", "redis-2": "5461-10922", "redis-3": "10923-16383"}


async def cli(directory: Path, *args: str, env: dict[str, str] | None = None,
              timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(timeout):
        return await trio.run_process(
            [PYTHON, "-m", "nursery.cluster", *args, "--dir", str(directory)],
            capture_stdout=True, capture_stderr=True, check=False, env=cluster_env(**(env or {})),
        )


async def status_json(directory: Path) -> dict[str, Any]:
    result = await cli(directory, "status", "--json")
    info: dict[str, Any] = json.loads(result.stdout)
    return info


def environment(pid: int) -> dict[str, str]:
    """What a running process was started with (/proc/PID/environ)."""
    entries = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(entry.decode().split("=", 1) for entry in entries if b"=" in entry)


async def test_up_with_a_redis_cluster_serves_through_caddy_and_survives_a_node_crash(
    tmp_path: Path, database_url: str
) -> None:
    require_caddy()
    directory = tmp_path / "cluster"
    base, proxy = free_port_block(2), free_port()
    try:
        up = await cli(directory, "up", "--detach", "--redis-cluster", "--instances", "2",
                       "--base-port", str(base), "--proxy-port", str(proxy),
                       env={"NURSERY_DATABASE_URL": database_url}, timeout=150)
        assert up.returncode == 0, up.stderr.decode() + up.stdout.decode()

        # status: one row per node, each ready with its share of the slots.
        status = await cli(directory, "status")
        assert status.returncode == 0, status.stdout.decode()
        rows = {line.split()[0]: line for line in status.stdout.decode().splitlines()[2:]}
        for node, slots in SLOTS.items():
            assert f"cluster ok, slots {slots}" in rows[node], rows[node]
            assert "ready" in rows[node].split()
        assert status.stdout.decode().count("/readyz 200") == 3  # two instances and Caddy

        # The instances were given the first node as seed, and told it is a cluster.
        info = await status_json(directory)
        nodes = {p["name"]: p for p in info["processes"] if p["kind"] == "redis-node"}
        seed = f"redis://127.0.0.1:{nodes['redis-1']['port']}/0"
        assert info["redis_cluster"] is True and info["redis_url"] == seed
        for name in ("instance-1", "instance-2"):
            pid = next(p["pid"] for p in info["processes"] if p["name"] == name)
            env = environment(pid)
            assert env["NURSERY_REDIS_URL"] == seed and env["NURSERY_REDIS_CLUSTER"] == "true"

        base_url = f"http://127.0.0.1:{proxy}"
        async with httpx.AsyncClient(timeout=10) as client:
            with trio.fail_after(30):
                user = await register(client, base_url)  # its rate-limit key: on redis-1
                user = await login(client, base_url, user, "phone")  # its rate-limit key: on redis-3
                created = await client.post(f"{base_url}/api/todos", json={"title": "on a cluster"},
                                            headers=user.headers)
                assert created.status_code == 201, created.text
                listed = await client.get(f"{base_url}/api/todos", headers=user.headers)
                assert [t["title"] for t in listed.json()["items"]] == ["on a cluster"]

        # A node killed with -9 is started again on its port and rejoins with its slots.
        victim = nodes["redis-2"]
        os.kill(victim["pid"], signal.SIGKILL)
        with trio.fail_after(30):
            while True:
                info = await status_json(directory)
                proc = next(p for p in info["processes"] if p["name"] == "redis-2")
                if proc["crashes"] == 1 and proc["state"] == "ready" and info["probes"]["redis-2"]:
                    break
                await trio.sleep(0.2)
        assert proc["pid"] != victim["pid"] and proc["port"] == victim["port"]
        assert info["probes"]["redis-2"] == f"cluster ok, slots {SLOTS['redis-2']}"

        down = await cli(directory, "down", timeout=60)
        assert down.returncode == 0, down.stderr.decode()
        assert live_pids(read_state(directory) or {}) == []
        assert not any(port_open(p["port"]) for p in nodes.values())
    finally:
        kill_everything(directory)


def test_an_external_cluster_is_named_to_the_instances_not_run(tmp_path: Path) -> None:
    """With NURSERY_REDIS_URL set, NURSERY_REDIS_CLUSTER (or --redis-cluster) says it is a
    cluster node: the instances are told so, no Redis is started, status says "external
    cluster"."""
    url = "redis://10.0.0.7:7000/0"
    config = ClusterConfig.from_env({"NURSERY_REDIS_URL": url, "NURSERY_REDIS_CLUSTER": "true"},
                                    directory=tmp_path, instances=2)
    assert config.redis_cluster
    supervisor = Supervisor(config, tmp_path, "postgresql://db/nursery", {"external": True})
    supervisor.plan("secret")
    assert [c.kind for c in supervisor.children] == ["instance", "instance", "caddy"]
    for instance in supervisor.instances:
        assert instance.env["NURSERY_REDIS_URL"] == url
        assert instance.env["NURSERY_REDIS_CLUSTER"] == "true"
    supervisor.write_state()
    state = read_state(tmp_path)
    assert state is not None
    redis_row = next(line for line in format_status(state, {}, True).splitlines()
                     if line.startswith("redis "))
    assert url in redis_row and "external cluster" in redis_row
