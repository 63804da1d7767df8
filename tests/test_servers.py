"""The test-server fixtures themselves: fault tests rely on stop/start keeping the URL."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nursery.stores.embedded import PrivatePostgres

if TYPE_CHECKING:  # imported by conftest at run time; see there for why not here
    from tests.servers import RedisCluster, RedisServer


def test_own_redis_stops_and_starts_on_the_same_port(own_redis: RedisServer) -> None:
    url = own_redis.url
    assert own_redis.ping()
    own_redis.stop()
    assert not own_redis.ping()
    assert own_redis.start() == url
    assert own_redis.ping()


def test_own_postgres_stops_and_starts_on_the_same_port(own_postgres: PrivatePostgres) -> None:
    url = own_postgres.url
    own_postgres.stop()
    assert not own_postgres.running
    assert own_postgres.start() == url
    assert own_postgres.execute("SELECT 1", database="nursery").strip() == "1"


def test_redis_url_is_flushed(redis_server: RedisServer, redis_url: str) -> None:
    assert redis_url == redis_server.url
    assert redis_server.command("DBSIZE") == b":0"
    assert redis_server.command("SET", "left", "over") == b"+OK"


def test_database_url_is_new_and_empty(pg_server: PrivatePostgres, database_url: str) -> None:
    name = database_url.rsplit("/", 1)[1]
    assert name.startswith("test_")
    tables = pg_server.execute(
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'", database=name)
    assert tables.strip() == "0"


def test_redis_cluster_url_is_a_whole_flushed_cluster(redis_cluster: RedisCluster,
                                                       redis_cluster_url: str) -> None:
    assert redis_cluster_url == redis_cluster.url
    assert redis_cluster.ready()  # every node: state ok, 16384 slots ok, 3 nodes known
    assert [node.command("DBSIZE") for node in redis_cluster.nodes] == [b":0"] * 3
    assert {redis_cluster.owner(slot) for slot in (0, 8000, 16383)} == {0, 1, 2}
