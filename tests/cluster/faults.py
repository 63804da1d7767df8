"""The faults of the fault table (bench/faults.py) and of the cluster tests, one function each,
and ``run_case``: a fault injected under a steady load (``tests.cluster.load``), with its figures.

A ``Deployment`` is a running ``nursery cluster`` whose PostgreSQL and Redis belong to the
caller (given as URLs), so that a fault can stop them for as long as it likes: the cluster's
supervisor would restart its own at once. Every fault acts from outside, as an operator or the
kernel would (signals, the CLI, stopping a server), and returns when the component it hit is
back: ``(injected_at, back_at)`` in trio time.

| fault | what it does | back when |
|---|---|---|
| ``rolling_restart`` | ``nursery cluster restart`` | the command returns (each instance in Caddy again) |
| ``kill_instance`` | SIGKILL to the instance holding the most devices | the supervisor has it ready again |
| ``restart_redis`` | SIGTERM to Redis, started again at once | it answers PING |
| ``stop_postgres`` | PostgreSQL stopped (fast shutdown), started ``POSTGRES_DOWN`` s later | it accepts connections |
| ``restart_caddy`` | SIGTERM to Caddy (the supervisor starts it again) | the supervisor has it ready again |
"""

from __future__ import annotations

import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio

from tests.cluster.load import Load, load_through, window_figures
from tests.cluster.support import RunningCluster
from tests.servers import PrivatePostgres, RedisServer

POSTGRES_DOWN = 10.0  # seconds PostgreSQL stays stopped
BEFORE = 1.0  # seconds of steady load before the fault
AFTER = 2.0  # seconds of load observed once the component is back
BACK_TIMEOUT = 120.0


@dataclass
class Deployment:
    cluster: RunningCluster
    postgres: PrivatePostgres
    redis: RedisServer


Fault = Callable[[Deployment, Load], Awaitable[tuple[float, float]]]


async def rolling_restart(deployment: Deployment, load: Load) -> tuple[float, float]:
    start = trio.current_time()
    result = await deployment.cluster.cli("restart", timeout=BACK_TIMEOUT)
    if result.returncode != 0:
        raise RuntimeError(f"nursery cluster restart failed: {result.stderr.decode()}")
    return start, trio.current_time()


async def kill_instance(deployment: Deployment, load: Load) -> tuple[float, float]:
    cluster = deployment.cluster
    names = [f"instance-{i}" for i in range(1, cluster.instances + 1)]
    victim = max(names, key=lambda name: sum(d.instance == name for d in load.devices))
    starts = cluster.process_info(victim)["starts"]
    start = trio.current_time()
    os.kill(cluster.pid(victim), signal.SIGKILL)
    await cluster.wait_ready(victim, after_starts=starts, timeout=BACK_TIMEOUT)
    return start, trio.current_time()


async def restart_redis(deployment: Deployment, load: Load) -> tuple[float, float]:
    start = trio.current_time()
    await trio.to_thread.run_sync(deployment.redis.stop)
    await trio.to_thread.run_sync(deployment.redis.start)  # returns once it answers PING
    return start, trio.current_time()


async def stop_postgres(deployment: Deployment, load: Load) -> tuple[float, float]:
    start = trio.current_time()
    await trio.to_thread.run_sync(deployment.postgres.stop)
    await trio.sleep(POSTGRES_DOWN)  # the fault itself: down this long
    await trio.to_thread.run_sync(deployment.postgres.start)  # returns once it accepts
    return start, trio.current_time()


async def restart_caddy(deployment: Deployment, load: Load) -> tuple[float, float]:
    cluster = deployment.cluster
    starts = cluster.process_info("caddy")["starts"]
    start = trio.current_time()
    os.kill(cluster.pid("caddy"), signal.SIGTERM)
    await cluster.wait_ready("caddy", after_starts=starts, timeout=BACK_TIMEOUT)
    return start, trio.current_time()


FAULTS: dict[str, tuple[str, Fault]] = {
    "rolling": ("rolling restart (3 instances)", rolling_restart),
    "kill": ("kill -9 of an instance", kill_instance),
    "redis": ("Redis restart", restart_redis),
    "postgres": (f"PostgreSQL stopped {POSTGRES_DOWN:g} s, then started", stop_postgres),
    "caddy": ("Caddy restart", restart_caddy),
}


async def run_case(
    deployment: Deployment, fault: Fault, *, devices: int = 4, writers: int = 2,
    interval: float = 0.04,
) -> dict[str, Any]:
    """``fault`` under a fresh steady load (a new user); the figures of the case."""
    async with load_through(deployment.cluster.proxy_url, devices=devices, writers=writers,
                            interval=interval) as load:
        await trio.sleep(BEFORE)  # steady load first (a duration of the experiment)
        start, back = await fault(deployment, load)
        await trio.sleep(AFTER)
        end = trio.current_time()
    outcome = load.outcome
    assert outcome is not None
    return {
        "writes_attempted": outcome.attempted,
        "writes_succeeded": outcome.succeeded,
        "writes_failed": outcome.failed,
        "writes_retried": outcome.retried,
        "duplicates": outcome.duplicates,
        "lost": outcome.lost,
        "unexpected": outcome.unexpected,
        "devices": len(load.devices),
        "devices_converged": outcome.converged,
        **window_figures(load, start, back, end),
        "problems": outcome.problems,
        "clean": outcome.clean,
    }
