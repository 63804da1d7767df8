"""``cluster``: a real ``nursery cluster up`` (3 instances and Caddy) on a PostgreSQL and a
Redis of its own (so that fault tests may stop them: ``deployment``), shared by the tests of
this package (starting one takes seconds) and stopped with ``nursery cluster down`` after the
last of them, whatever happened. Each test gets it with every process ready again, and
registers users of its own."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.faults import Deployment
from tests.cluster.support import RunningCluster, require_caddy, start_cluster
from tests.servers import PrivatePostgres, RedisServer, running, scratch_dir


@pytest.fixture(scope="package")
def cluster_postgres() -> Iterator[PrivatePostgres]:
    with running("nursery-cluster-pg-", lambda directory: PrivatePostgres(directory, fast=True)) as server:
        yield server


@pytest.fixture(scope="package")
def cluster_redis() -> Iterator[RedisServer]:
    with running("nursery-cluster-redis-", RedisServer) as server:
        yield server


@pytest.fixture(scope="package")
def shared_cluster(cluster_postgres: PrivatePostgres, cluster_redis: RedisServer) -> Iterator[RunningCluster]:
    require_caddy()
    directory = Path(scratch_dir("nursery-cluster-"))
    running = start_cluster(directory, NURSERY_DATABASE_URL=cluster_postgres.url,
                            NURSERY_REDIS_URL=cluster_redis.url)
    try:
        yield running
        # `down` stops the supervisor, which stops everything it started, and exits 0.
        down = running.cli_sync("down", timeout=90)
        assert down.returncode == 0 and "stopped" in down.stdout, down.stderr
        assert running.process.wait(10) == 0
    finally:
        running.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def cluster(shared_cluster: RunningCluster, cluster_postgres: PrivatePostgres,
            cluster_redis: RedisServer) -> RunningCluster:
    # A fault test that failed half-way may have left its server stopped.
    cluster_postgres.start()
    cluster_redis.start()
    deadline = time.monotonic() + 60
    while not all(p["state"] == "ready" for p in shared_cluster.state()["processes"]):
        assert shared_cluster.process.poll() is None, "the supervisor has exited"
        assert time.monotonic() < deadline, f"the cluster is not ready:\n{shared_cluster.log_tails()}"
        time.sleep(0.05)
    return shared_cluster


@pytest.fixture
def deployment(cluster: RunningCluster, cluster_postgres: PrivatePostgres,
               cluster_redis: RedisServer) -> Deployment:
    return Deployment(cluster, cluster_postgres, cluster_redis)
