"""Fixtures that give tests real servers (see tests/servers.py).

Servers are started by SYNC fixtures: pytest-trio runs async fixtures per test only, and a
session-wide server must outlive every test's trio run. Each fixture stops what it started at
teardown and removes its scratch directory.

- ``pg_server`` (session): one private PostgreSQL (fsync off), for the whole run.
- ``database_url`` (test): a brand-new empty database on ``pg_server``, dropped afterwards.
- ``redis_server`` (session): one redis-server, no persistence.
- ``redis_url`` (test): ``redis_server``'s URL, after FLUSHALL.
- ``redis_cluster`` (session): a 3-master Redis Cluster (``RedisCluster``), no persistence.
- ``redis_cluster_url`` (test): a seed URL of ``redis_cluster``, every node running and
  healthy, its keys and scripts flushed.
- ``redis_ha_cluster`` (test): a Redis Cluster of 3 masters each with a replica, as ``nursery
  cluster up --ha`` runs it (its own for each test: a failover test leaves its roles changed).
- ``own_redis`` / ``own_postgres`` (test): private servers the test may ``stop()`` and
  ``start()`` again on the same port (fault tests); stopped at teardown if still running.
- ``open_dir`` (test): an empty directory for an embedded PostgreSQL's data dir (pytest's
  ``tmp_path`` lies under a 0700 directory that, as root, the ``postgres`` user cannot reach).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import PrivatePostgres, RedisCluster, RedisServer, new_database, running, scratch_dir


@pytest.fixture
def open_dir() -> Iterator[Path]:
    directory = scratch_dir("nursery-test-")
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PrivatePostgres]:
    with running("nursery-pg-", lambda directory: PrivatePostgres(directory, fast=True)) as server:
        yield server


@pytest.fixture
def database_url(pg_server: PrivatePostgres) -> Iterator[str]:
    url = new_database(pg_server)
    yield url
    # Dropping (~20 ms, disconnects leftovers) keeps the RAM-backed cluster small.
    pg_server.drop_database(url.rsplit("/", 1)[1])


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with running("nursery-redis-", RedisServer) as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    redis_server.flushall()
    return redis_server.url


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    with running("nursery-own-redis-", RedisServer) as server:
        yield server


@pytest.fixture
def own_postgres() -> Iterator[PrivatePostgres]:
    with running("nursery-own-pg-", lambda directory: PrivatePostgres(directory, fast=True)) as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    with running("nursery-redis-cluster-", RedisCluster) as server:
        yield server


@pytest.fixture
def redis_cluster_url(redis_cluster: RedisCluster) -> str:
    # A fault test that failed half-way may have left a node stopped.
    redis_cluster.start()
    redis_cluster.flushall()
    return redis_cluster.url


@pytest.fixture
def redis_ha_cluster() -> Iterator[RedisCluster]:
    with running("nursery-redis-ha-", lambda directory: RedisCluster(directory, nodes=6, replicas=1)) as server:
        yield server
