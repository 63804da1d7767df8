"""``nursery cluster`` as an operator uses it: ``up --detach`` with its own PostgreSQL and
Redis, ``status``, a crashed instance and a crashed PostgreSQL coming back, a second ``up`` refused, and ``down``
cleaning up after a supervisor that was killed. (Rolling ``restart`` under load:
test_under_load.py.)"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
from pathlib import Path

import httpx
import trio

from nursery.cluster import live_pids, read_state
from nursery.cluster._state import cmdline
from tests.cluster.support import PYTHON, cluster_env, free_port_block, require_caddy
from tests.servers import free_port


async def cli(directory: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(timeout):
        return await trio.run_process(
            [PYTHON, "-m", "nursery.cluster", *args, "--dir", str(directory)],
            capture_stdout=True, capture_stderr=True, check=False, env=cluster_env(),
        )


async def register_through(base: str) -> None:
    """A sign-up (a database write) through Caddy succeeds, retrying 502/503 as a client does
    while the instances' pools replace the connections the dead server took with it."""
    async with httpx.AsyncClient(timeout=5) as client:
        with trio.fail_after(30):
            while True:
                r = await client.post(f"{base}/api/auth/register",
                                      json={"email": "after@example.com", "password": "correct horse"})
                if r.status_code not in (502, 503):
                    break
                await trio.sleep(0.2)
    assert r.status_code == 201, r.text


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def kill_everything(directory: Path) -> None:
    """Teardown: kill the supervisor first (so it restarts nothing), then what it started."""
    state = read_state(directory)
    if not state:
        return
    supervisor = state["supervisor"]["pid"]
    pids = [supervisor] if "nursery.cluster" in cmdline(supervisor) else []  # not a recycled pid
    pids += [pid for _, pid, _ in live_pids(state)]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


async def test_up_status_crash_and_down_after_a_killed_supervisor(open_dir: Path) -> None:
    require_caddy()
    directory = open_dir / "cluster"
    base, proxy = free_port_block(2), free_port()
    try:
        up = await cli(directory, "up", "--detach", "--instances", "2", "--base-port", str(base),
                       "--proxy-port", str(proxy), timeout=150)
        assert up.returncode == 0, up.stderr.decode() + up.stdout.decode()
        assert "instance-2" in up.stdout.decode()

        status = await cli(directory, "status")
        assert status.returncode == 0, status.stdout.decode()
        table = status.stdout.decode()
        for name in ("postgres", "redis", "instance-1", "instance-2", "caddy"):
            assert name in table
        assert table.count("/readyz 200") == 3  # two instances and Caddy

        # The secret every instance shares was generated once, private.
        assert (directory / "secret_key").stat().st_mode & 0o777 == 0o600
        assert (directory / "state.json").stat().st_mode & 0o777 == 0o600

        # A second supervisor on the same directory is refused at once.
        again = await cli(directory, "up", "--instances", "2", "--base-port", str(free_port_block(2)),
                          "--proxy-port", str(free_port()), timeout=30)
        assert again.returncode == 1 and "already running" in again.stderr.decode()

        # A crashed instance is started again by the supervisor.
        state = read_state(directory)
        assert state is not None
        victim = next(p for p in state["processes"] if p["name"] == "instance-2")
        os.kill(victim["pid"], signal.SIGKILL)
        with trio.fail_after(30):
            while True:
                info = json.loads((await cli(directory, "status", "--json")).stdout)
                proc = next(p for p in info["processes"] if p["name"] == "instance-2")
                if proc["crashes"] == 1 and proc["state"] == "ready" and info["probes"]["instance-2"]:
                    break
                await trio.sleep(0.2)
        assert proc["pid"] != victim["pid"]

        # So is PostgreSQL, killed with -9 (recovery, then ready), and the instances use it again.
        postgres = next(p for p in state["processes"] if p["name"] == "postgres")
        os.kill(postgres["pid"], signal.SIGKILL)
        with trio.fail_after(30):
            while True:
                info = json.loads((await cli(directory, "status", "--json")).stdout)
                proc = next(p for p in info["processes"] if p["name"] == "postgres")
                if proc["crashes"] == 1 and proc["state"] == "ready" and info["probes"]["postgres"]:
                    break
                await trio.sleep(0.2)
        assert proc["pid"] != postgres["pid"] and proc["port"] == postgres["port"]
        assert "exited with signal SIGKILL" in (directory / "logs" / "postgres.log").read_text()
        await register_through(f"http://127.0.0.1:{proxy}")

        # The supervisor dies (kill -9): its children live on; status says so, down stops them.
        state = read_state(directory)
        assert state is not None
        os.kill(state["supervisor"]["pid"], signal.SIGKILL)
        with trio.fail_after(10):
            while (await cli(directory, "status")).returncode != 2:
                await trio.sleep(0.1)
        assert "NOT RUNNING" in (await cli(directory, "status")).stdout.decode()
        orphans = live_pids(state)
        assert {name for name, _, _ in orphans} == {"postgres", "redis", "instance-1", "instance-2", "caddy"}
        down = await cli(directory, "down", timeout=60)
        assert down.returncode == 0, down.stderr.decode()
        assert "stopping orphaned postgres" in down.stdout.decode()
        assert live_pids(state) == []
        assert not any(port_open(p) for p in (base, base + 1, proxy, state["database"]["port"]))
        assert (await cli(directory, "status")).returncode == 1
    finally:
        kill_everything(directory)


async def test_up_refuses_a_port_in_use_and_a_drain_shorter_than_the_health_check(tmp_path: Path) -> None:
    require_caddy()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = await cli(tmp_path, "up", "--base-port", str(free_port_block(3)), "--proxy-port", str(port),
                           timeout=30)
    assert result.returncode == 1
    assert f"{port}" in result.stderr.decode() and "in use" in result.stderr.decode()
    assert "Traceback" not in result.stderr.decode()

    with trio.fail_after(30):
        result = await trio.run_process(
            [PYTHON, "-m", "nursery.cluster", "up", "--dir", str(tmp_path), "--health-interval", "3"],
            capture_stdout=True, capture_stderr=True, check=False,
            env=cluster_env(NURSERY_DRAIN_DELAY="2"),
        )
    assert result.returncode == 1 and "drain delay" in result.stderr.decode()
