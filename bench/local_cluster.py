"""A throwaway local deployment for benchmarks: PostgreSQL (fsync on), Redis, N instances.

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


SECRET = "bench"


@dataclass
class Cluster:
    urls: list[str]
    database_url: str
    secret: str
    pids: list[int]


@asynccontextmanager
async def local_cluster(instances: int = 3, *, log_dir: Path | None = None) -> AsyncIterator[Cluster]:
    directory = Path(tempfile.mkdtemp(prefix="nursery-bench-"))
    postgres = PrivatePostgres(directory / "pg", fast=False)
    await trio.to_thread.run_sync(postgres.start)
    processes = []
    try:
        async with local_redis(directory) as redis_url:
            urls = []
            for index in range(instances):
                port = free_port()
                env = {
                    **os.environ,
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
                    env=env, stdout=log, stderr=log,
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
