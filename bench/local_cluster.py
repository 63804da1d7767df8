"""A throwaway local deployment for benchmarks: PostgreSQL (fsync on), Redis (or a 3-master
Redis Cluster), N instances.

Used as ``async with local_cluster(n) as urls`` by the bench scripts; everything it starts is
stopped on exit. Instances are real ``nursery serve`` processes, so the load generator's own
CPU is separate from the servers'.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import trio

from nursery.cluster import _redis_cluster as cluster_nodes
from nursery.redis.resp import Client
from nursery.stores.embedded import PrivatePostgres, free_port


@asynccontextmanager
async def local_redis(directory: Path) -> AsyncIterator[str]:
    port = free_port()
    process = await trio.lowlevel.open_process(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(directory)],
        stdout=subprocess.DEVNULL,
    )
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        with trio.move_on_after(5):
            await process.wait()
        process.kill()


@asynccontextmanager
async def local_redis_cluster(directory: Path, timeout: float = 30) -> AsyncIterator[str]:
    """A 3-master Redis Cluster (``nursery cluster up --redis-cluster``'s topology); yields a
    seed URL once every node reports the whole cluster healthy."""
    processes, ports = [], []
    try:
        for index in range(cluster_nodes.NODES):
            port, bus_port = free_port(), free_port()
            node_dir = directory / f"redis-node-{index}"
            node_dir.mkdir()
            processes.append(await trio.lowlevel.open_process(
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(node_dir),
                 *cluster_nodes.node_args(bus_port=bus_port, directory=node_dir)],
                stdout=subprocess.DEVNULL))
            ports.append(port)
        with trio.fail_after(timeout):
            for port in ports:  # every node listening before they are joined
                await _wait_redis(port)
            await trio.run_process(cluster_nodes.create_argv("redis-cli", "127.0.0.1", ports),
                                   stdout=subprocess.DEVNULL)
            for port in ports:
                while not cluster_nodes.ready(cluster_nodes.parse_info(
                        await _redis_text(port, "CLUSTER", "INFO"))):
                    await trio.sleep(0.05)
        yield f"redis://127.0.0.1:{ports[0]}/0"
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            with trio.move_on_after(5):
                await process.wait()
            process.kill()


async def _wait_redis(port: int) -> None:
    while True:
        try:
            await (await trio.open_tcp_stream("127.0.0.1", port)).aclose()
            return
        except OSError:  # not listening yet
            await trio.sleep(0.02)


async def _redis_text(port: int, *command: str) -> str:
    async with Client.open(f"redis://127.0.0.1:{port}/0", timeout=5) as client:
        reply = await client.call(*command)
    return reply.decode() if isinstance(reply, bytes) else str(reply)


async def _wait_ready(url: str, timeout: float = 60) -> None:
    async with httpx.AsyncClient() as client:
        with trio.fail_after(timeout):
            while True:
                try:
                    if (await client.get(f"{url}/readyz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await trio.sleep(0.1)


SECRET = "bench-secret-of-32-characters-at-least"


@dataclass
class Cluster:
    urls: list[str]
    database_url: str
    secret: str
    pids: list[int]


@asynccontextmanager
async def local_cluster(instances: int = 3, *, log_dir: Path | None = None, redis_cluster: bool = False,
                        server_source: Path | None = None) -> AsyncIterator[Cluster]:
    """``redis_cluster``: the broker on a 3-master Redis Cluster (sharded pub/sub) instead of
    one Redis. ``server_source``: run the instances from that checkout (``PYTHONPATH``), say
    an older commit's, to compare; the bench scripts stay this checkout's."""
    directory = Path(tempfile.mkdtemp(prefix="nursery-bench-"))
    directory.chmod(0o755)  # ours: as root, PostgreSQL (user postgres) must reach its data dir
    postgres = PrivatePostgres(directory / "pg", fast=False)
    await trio.to_thread.run_sync(postgres.start)
    processes = []
    redis = local_redis_cluster(directory) if redis_cluster else local_redis(directory)
    try:
        async with redis as redis_url:
            urls = []
            for index in range(instances):
                port = free_port()
                env = {
                    **os.environ,
                    **({"NURSERY_REDIS_CLUSTER": "true"} if redis_cluster else {}),
                    **({"PYTHONPATH": str(server_source)} if server_source else {}),
                    "NURSERY_DATABASE_URL": postgres.url,
                    "NURSERY_REDIS_URL": redis_url,
                    "NURSERY_SECRET_KEY": SECRET,
                    "NURSERY_INSTANCE_NAME": f"bench-{index + 1}",
                    "NURSERY_LOG_LEVEL": "WARNING",
                    # the load generator registers and writes from one address
                    "NURSERY_LOGIN_RATE_PER_CLIENT": "1000000/1",
                    "NURSERY_REGISTER_RATE_PER_CLIENT": "1000000/1",
                    "NURSERY_WRITE_RATE_PER_USER": "1000000/1",
                }
                log = open((log_dir or directory) / f"instance-{index + 1}.log", "w")
                processes.append(await trio.lowlevel.open_process(
                    [sys.executable, "-m", "nursery", "serve", "--port", str(port)],
                    env=env, stdout=log, stderr=log, cwd=server_source,
                ))
                urls.append(f"http://127.0.0.1:{port}")
            for url in urls:
                await _wait_ready(url)
            yield Cluster(urls, postgres.url, SECRET, [p.pid for p in processes])
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            with trio.move_on_after(10):
                await process.wait()
            process.kill()
        await trio.to_thread.run_sync(postgres.stop)
        shutil.rmtree(directory, ignore_errors=True)
