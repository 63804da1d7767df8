"""``cluster``: a real ``nursery cluster up`` (3 instances and Caddy) on a database of its own
and the session's Redis, shared by the tests of a module (starting one takes seconds) and
stopped with ``nursery cluster down`` after the module, whatever happened. Each test gets it
with every process ready again, and registers users of its own."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.support import RunningCluster, require_caddy, start_cluster
from tests.servers import PrivatePostgres, RedisServer, new_database, scratch_dir


@pytest.fixture(scope="module")
def shared_cluster(pg_server: PrivatePostgres, redis_server: RedisServer) -> Iterator[RunningCluster]:
    require_caddy()
    directory = Path(scratch_dir("nursery-cluster-"))
    database_url = new_database(pg_server)
    redis_server.flushall()
    running = start_cluster(directory, NURSERY_DATABASE_URL=database_url,
                            NURSERY_REDIS_URL=redis_server.url)
    try:
        yield running
        # `down` stops the supervisor, which stops everything it started, and exits 0.
        down = running.cli_sync("down", timeout=90)
        assert down.returncode == 0 and "stopped" in down.stdout, down.stderr
        assert running.process.wait(10) == 0
    finally:
        running.stop()
        pg_server.drop_database(database_url.rsplit("/", 1)[1])
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def cluster(shared_cluster: RunningCluster) -> RunningCluster:
    deadline = time.monotonic() + 60
    while not all(p["state"] == "ready" for p in shared_cluster.state()["processes"]):
        assert shared_cluster.process.poll() is None, "the supervisor has exited"
        assert time.monotonic() < deadline, f"the cluster is not ready:\n{shared_cluster.log_tails()}"
        time.sleep(0.05)
    return shared_cluster
