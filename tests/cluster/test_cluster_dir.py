"""``nursery cluster status|restart|down`` find the cluster without ``--dir``: from
``NURSERY_CLUSTER_DIR``, else the directory of the last ``up``, and say how to point them
elsewhere when there is none."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.cluster.support import PYTHON, cluster_env, free_port_block, require_caddy
from tests.servers import free_port


def cluster(cwd: Path, *args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PYTHON, "-m", "nursery", "cluster", *args], cwd=cwd, capture_output=True,
                          text=True, env=cluster_env(**env), timeout=timeout)


def test_without_a_cluster_the_message_says_where_it_looked_and_how_to_point_elsewhere(tmp_path: Path) -> None:
    state = str(tmp_path / "state")
    for command in ("status", "restart"):
        result = cluster(tmp_path, command, XDG_STATE_HOME=state)
        assert result.returncode == 1
        assert result.stderr.strip().endswith(
            f"in {tmp_path}/.nursery/cluster (found from the default; pass --dir DIR or set "
            "NURSERY_CLUSTER_DIR=DIR)"), result.stderr
    result = cluster(tmp_path, "status", XDG_STATE_HOME=state, NURSERY_CLUSTER_DIR=str(tmp_path / "c"))
    assert (result.returncode, result.stderr.strip()) == (1, f"no cluster running in {tmp_path / 'c'}")


def test_status_restart_and_down_find_the_last_up_without_dir(
        tmp_path: Path, database_url: str, redis_url: str) -> None:
    require_caddy()
    state, directory, elsewhere = tmp_path / "state", tmp_path / "my-cluster", tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {"XDG_STATE_HOME": str(state), "NURSERY_DATABASE_URL": database_url, "NURSERY_REDIS_URL": redis_url,
           "NURSERY_SECRET_KEY": "s" * 32}
    up = cluster(tmp_path, "up", "--detach", "--dir", str(directory), "--instances", "1",
                 "--base-port", str(free_port_block(1)), "--proxy-port", str(free_port()), **env)
    try:
        assert up.returncode == 0, up.stderr + up.stdout
        assert (state / "nursery" / "last-cluster").read_text().strip() == str(directory)
        status = cluster(elsewhere, "status", **env)
        assert status.returncode == 0, status.stderr
        assert status.stdout.startswith(f"cluster {directory}: supervisor pid ")
        restart = cluster(elsewhere, "restart", **env)
        assert restart.returncode == 0, restart.stderr
        assert "instance-1 restarted one at a time" in restart.stdout
        # NURSERY_CLUSTER_DIR wins over the remembered directory.
        other = cluster(elsewhere, "status", NURSERY_CLUSTER_DIR=str(elsewhere), **env)
        assert (other.returncode, other.stderr.strip()) == (1, f"no cluster running in {elsewhere}")
    finally:
        down = cluster(elsewhere, "down", **env)
    assert down.returncode == 0 and down.stdout.strip() == f"cluster in {directory} stopped", down

