"""The supervisor (driven by ``_run.run_cluster``): starts PostgreSQL (unless given a URL), Redis (unless
given a URL), the instances and Caddy as child processes it owns, restarts any of them that
exits (PostgreSQL included), performs rolling restarts on SIGHUP, and stops everything on
SIGTERM/SIGINT.

Children: each runs in its own session (a terminal's Ctrl-C reaches the supervisor only, which
stops them in order), with stdout and stderr appended to ``DIR/logs/NAME.log`` together with
the supervisor's own lines about it (``--- ... supervisor: ...``). A child that exits on its
own is started again after a backoff (0.5 s doubling to 30 s; reset once it stayed up 30 s).
The state file is rewritten on every change.

Rolling restarts on SIGHUP: ``_rolling``.

With ``--redis-cluster`` (``config.redis_cluster`` and no Redis URL) Redis is a Redis Cluster
of ``redis_cluster.NODES`` masters instead (children ``redis-1``.., files in
``DIR/redis-cluster/node-N``): started together, joined by ``redis-cli --cluster create`` once
each answers PING, ready once each reports the whole cluster healthy. A new cluster on every
``up`` (new ports); a node that dies is restarted on its ports with its nodes.conf and rejoins
with its slots (its data is gone: nothing is persisted). The instances get the first node's
URL and ``NURSERY_REDIS_CLUSTER=true``. With ``--ha`` (and no Redis URL) the cluster has a
replica per master (six nodes; ``_ha.watch_roles`` keeps their roles in the state file); a crashed
node is restarted only once its replica had time to take over (``Child.restart_delay``).

PostgreSQL runs in the foreground as a child like the others (``postgres -D DIR/pg``, as the
``postgres`` user when we are root), so a crash is seen and restarted the same way; it starts
first, and the ``nursery`` database is created once it answers.

Shutdown: instances first (all at once, SIGTERM, so clients get 1012 through Caddy), then
Caddy, then Redis, then PostgreSQL (SIGINT: its fast shutdown); each is killed if it outlives
its deadline. A second
signal passes SIGTERM on to the instances again (they stop at once), a third kills everything.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import trio

from nursery.cluster import _ha
from nursery.cluster import _redis_cluster as redis_cluster
from nursery.cluster._child import POLL, Child
from nursery.cluster._config import LOG_DIR, STATE_FILE, ClusterConfig, ClusterError
from nursery.cluster._logs import describe_exit, log_tail, note, redact
from nursery.cluster._plan import Plan, proxy_probe_address, proxy_tls
from nursery.cluster._probes import (
    TLS,
    redis_probe,
)
from nursery.cluster._state import write_private
from nursery.stores.embedded import PrivatePostgres

log = logging.getLogger("nursery.cluster")

INITIAL_BACKOFF = 0.5  # seconds before restarting a crashed child; doubles per crash
MAX_BACKOFF = 30.0
STABLE_AFTER = 30.0  # a child up this long has its crash count reset
CADDY_STOP_TIMEOUT = 15.0  # the Caddyfile's grace_period (10 s) plus a margin
REDIS_STOP_TIMEOUT = 10.0
POSTGRES_STOP_TIMEOUT = 30.0  # a fast shutdown writes a checkpoint first


class Supervisor:
    """Owns the children of one cluster directory; see the module docstring."""

    def __init__(self, config: ClusterConfig, directory: Path, database_url: str,
                 database_info: dict[str, Any], postgres: PrivatePostgres | None = None) -> None:
        """``postgres``: the private server to run and supervise (None: ``database_url`` is
        external), already initialised (``PrivatePostgres.prepare``)."""
        self.config = config
        self.directory = directory
        self.database_url = database_url
        self.database_info = database_info
        self.postgres = postgres
        self.children: list[Child] = []
        self.instances: list[Child] = []
        self.caddy: Child | None = None
        self.caddy_admin: str | None = None
        self.redis_url = config.redis_url or ""
        self.state = "starting"
        self.started_at = time.time()
        self.stop_requested = trio.Event()
        self.signals_seen = 0
        self.roll: dict[str, Any] = {"id": 0, "state": "none"}
        self.roll_wanted = trio.Event()
        self.startup_scope = trio.CancelScope()
        self.ha_nodes: list[Any] = []  # the Patroni nodes of --ha (_patroni.Node)

    # -- building the children ------------------------------------------------------------

    def plan(self, secret_key: str, postgres_argv: list[str] | None = None) -> None:
        """The children to run (``_plan``); ``postgres_argv``: the private PostgreSQL's
        command line."""
        plan = Plan(self.config, self.directory, self.database_url, self.database_info,
                    self.postgres, self.redis_url)
        plan.build(secret_key, postgres_argv)
        self.children, self.instances, self.caddy = plan.children, plan.instances, plan.caddy
        self.caddy_admin, self.redis_url, self.ha_nodes = plan.caddy_admin, plan.redis_url, plan.ha_nodes
        self.database_url, self.database_info = plan.database_url, plan.database_info

    @property
    def proxy_probe_address(self) -> tuple[str, int]:
        return proxy_probe_address(self.config)

    @property
    def proxy_tls(self) -> TLS | None:
        return proxy_tls(self.config, self.directory)

    # -- state file -----------------------------------------------------------------------

    def write_state(self) -> None:
        state = {
            "supervisor": {"pid": os.getpid(), "state": self.state, "started_at": self.started_at,
                           "directory": str(self.directory)},
            "proxy_url": self.config.proxy_url,
            "tls": self.config.tls,
            "caddy_admin": self.caddy_admin,
            "database": {**self.database_info, "url": redact(self.database_url)},
            "redis_url": self.redis_url,
            "redis_cluster": self.config.uses_redis_cluster,
            "health_interval": self.config.health_interval,
            "drain_delay": self.config.effective_drain_delay,
            "shutdown_timeout": self.config.shutdown_timeout,
            "processes": [child.snapshot() for child in self.children],
            "roll": self.roll,
        }
        write_private(self.directory / STATE_FILE, json.dumps(state, indent=2) + "\n")

    def set_state(self, child: Child, state: str) -> None:
        child.state = state
        self.write_state()

    # -- supervising one child ------------------------------------------------------------

    async def supervise(self, child: Child) -> None:
        """Keep ``child`` running until ``child.stopping``; restarts it after a crash (with
        backoff) or at once after a planned restart. Kills it if this task is cancelled."""
        failures = 0
        child.supervised = True
        try:
            while not child.stopping:
                child.wake = trio.Event()
                process = await self._spawn(child)
                if process is None:
                    exit_code: int | None = None
                    uptime = 0.0
                else:
                    began = trio.current_time()
                    async with trio.open_nursery() as watch:
                        watch.start_soon(self._await_ready, child, process)
                        try:
                            await process.wait()
                        finally:
                            if process.returncode is None:  # cancelled: never leave it behind
                                with trio.CancelScope(shield=True):
                                    process.kill()
                                    await process.wait()
                        watch.cancel_scope.cancel()
                    exit_code, uptime = process.returncode, trio.current_time() - began
                    child.last_exit = exit_code
                    note(child.log_path, f"exited with {describe_exit(exit_code)} after {uptime:.1f} s")
                if child.stopping:
                    break
                if child.replace:
                    child.replace, failures = False, 0
                    log.info("%s exited with %s; starting it again (rolling restart)", child.name,
                             describe_exit(exit_code))
                    continue
                if uptime >= STABLE_AFTER:
                    failures = 0
                delay = max(child.restart_delay, min(MAX_BACKOFF, INITIAL_BACKOFF * 2**failures))
                failures += 1
                child.crashes += 1
                log.warning("%s exited unexpectedly with %s; restarting in %.1f s (see %s)",
                            child.name, describe_exit(exit_code), delay, child.log_path)
                self.set_state(child, "backoff")
                with trio.move_on_after(delay):
                    await child.wake.wait()
        finally:
            child.state = "stopped"
            child.finished.set()
            with contextlib.suppress(OSError):
                self.write_state()

    async def _spawn(self, child: Child) -> trio.Process | None:
        child.generation += 1
        child.log_path.parent.mkdir(parents=True, exist_ok=True)
        note(child.log_path, f"starting: {' '.join(child.argv)}")
        try:
            with open(child.log_path, "ab") as log_file:  # the child keeps its own copy
                child.process = await trio.lowlevel.open_process(
                    child.argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                    env=child.env, start_new_session=True,  # a terminal's ^C reaches us only
                )
        except OSError as exc:
            child.process = None
            child.last_exit = None
            note(child.log_path, f"cannot start {child.argv[0]}: {exc}")
            log.error("cannot start %s (%s): %s", child.name, child.argv[0], exc)
            return None
        child.started_at = time.time()
        log.info("%s started (pid %d)", child.name, child.process.pid)
        self.set_state(child, "starting")
        return child.process

    async def _await_ready(self, child: Child, process: trio.Process) -> None:
        while process.returncode is None:
            if await child.probe() is not None:
                if not child.stopping and child.process is process:
                    self.set_state(child, "ready")
                return
            await trio.sleep(0.1)

    async def stop_child(self, child: Child, timeout: float) -> None:
        """Its stop signal, then SIGKILL after ``timeout``; returns once its supervise task
        ended."""
        child.stopping = True
        child.wake.set()
        if not child.supervised:
            return
        if child.pid is not None:
            self.set_state(child, "stopping")
        child.signal(child.stop_signal)
        with trio.move_on_after(timeout) as waited:
            await child.finished.wait()
        if waited.cancelled_caught:
            log.warning("%s did not stop within %.0f s: killing it", child.name, timeout)
            child.signal(signal.SIGKILL)
            with trio.move_on_after(5):
                await child.finished.wait()

    # -- startup, shutdown -----------------------------------------------------------------

    async def wait_ready(self, children: Sequence[Child], timeout: float) -> None:
        """Until every child is ready. Raises ``ClusterError`` if one exits or is not ready in
        time (during startup nothing is retried: the operator sees the reason at once)."""
        deadline = trio.current_time() + timeout
        for child in children:
            while child.state != "ready":
                _check_started(child)
                if trio.current_time() > deadline:
                    raise ClusterError(f"{child.name} was not ready after {timeout:.0f} s; "
                                       f"{child.log_path} ends:\n{log_tail(child.log_path)}")
                await trio.sleep(POLL)

    async def form_redis_cluster(self, nodes: Sequence[Child]) -> None:
        """Join the new ``nodes`` into one cluster, once each answers PING. Raises
        ``ClusterError`` if one exits or is silent, or ``redis-cli`` fails, within
        ``ready_timeout`` (its output: ``DIR/logs/redis-cluster-create.log``)."""
        timeout = self.config.ready_timeout
        deadline = trio.current_time() + timeout
        for child in nodes:
            while await redis_probe(child.host, child.port) is None:
                _check_started(child)
                if trio.current_time() > deadline:
                    raise ClusterError(f"{child.name} did not answer PING within {timeout:.0f} s; "
                                       f"{child.log_path} ends:\n{log_tail(child.log_path)}")
                await trio.sleep(POLL)
        argv = redis_cluster.create_argv(self.config.redis_cli, self.config.host, [c.port for c in nodes],
                                         self.config.redis_replicas)
        log.info("forming the Redis Cluster: %s", " ".join(argv))
        output_path = self.directory / LOG_DIR / "redis-cluster-create.log"
        with trio.move_on_after(max(1.0, deadline - trio.current_time())) as waited:
            result = await trio.run_process(argv, stdin=b"", capture_stdout=True, capture_stderr=True,
                                            check=False)
        if waited.cancelled_caught:
            raise ClusterError(f"{' '.join(argv[:3])} did not finish within {timeout:.0f} s")
        output_path.write_bytes(result.stdout + result.stderr)
        if result.returncode != 0:
            raise ClusterError(f"{' '.join(argv)} failed ({describe_exit(result.returncode)}); "
                               f"{output_path} ends:\n{log_tail(output_path)}")

    async def start_all(self, nursery: trio.Nursery) -> None:
        postgres = [c for c in self.children if c.kind == "postgres"]
        patroni = [c for c in self.children if c.kind == "patroni"]
        redis_nodes = [c for c in self.children if c.kind == "redis-node"]
        stages: list[list[Child]] = [[c for c in self.children if c.kind == "etcd"], patroni,
                                     postgres, [c for c in self.children if c.kind == "redis"],
                                     redis_nodes, self.instances, [self.caddy] if self.caddy else []]
        for stage in stages:
            for child in stage:
                nursery.start_soon(self.supervise, child)
            if stage is redis_nodes and redis_nodes:
                await self.form_redis_cluster(redis_nodes)
            await self.wait_ready(stage, self.config.ready_timeout)
            if stage is patroni and patroni:
                leader = await _ha.until_primary(patroni, self.ha_nodes, self.config.ready_timeout)
                log.info("PostgreSQL leader: %s", leader)
            if stage is redis_nodes and redis_nodes and self.config.redis_replicas:
                await _ha.until_replicas_linked(redis_nodes, self.config.ready_timeout)
            if stage is postgres and self.postgres is not None:
                await trio.to_thread.run_sync(self.postgres.create_database_if_missing)
        if patroni or (redis_nodes and self.config.redis_replicas):
            nursery.start_soon(_ha.watch_roles, patroni + redis_nodes, self.ha_nodes, self.write_state)

    async def stop_all(self) -> None:
        self.state = "stopping"
        self.write_state()
        stop_margin = 5.0
        async with trio.open_nursery() as group:
            for child in self.instances:
                group.start_soon(self.stop_child, child, self.config.shutdown_timeout + stop_margin)
        for kind, timeout in (("caddy", CADDY_STOP_TIMEOUT), ("redis", REDIS_STOP_TIMEOUT),
                              ("redis-node", REDIS_STOP_TIMEOUT), ("postgres", POSTGRES_STOP_TIMEOUT),
                              ("patroni", POSTGRES_STOP_TIMEOUT), ("etcd", REDIS_STOP_TIMEOUT)):
            for child in self.children:
                if child.kind == kind:
                    await self.stop_child(child, timeout)

    async def handle_signals(self, signals: AsyncIterator[int]) -> None:
        async for signum in signals:
            if signum == signal.SIGHUP:
                log.info("SIGHUP: rolling restart requested")
                self.roll_wanted.set()
                continue
            self.signals_seen += 1
            log.info("received %s", signal.Signals(signum).name)
            self.stop_requested.set()
            self.startup_scope.cancel()
            if self.signals_seen == 2:
                log.warning("second stop signal: instances stop at once")
                for child in self.instances:
                    child.signal(signal.SIGTERM)
            elif self.signals_seen >= 3:
                log.warning("third stop signal: killing everything")
                for child in self.children:
                    child.signal(signal.SIGKILL)


def _check_started(child: Child) -> None:
    """During startup nothing is retried: a child that exited fails the startup at once."""
    if child.state in ("backoff", "stopped") or child.generation > 1:
        raise ClusterError(f"{child.name} exited during startup "
                           f"({describe_exit(child.last_exit)}); "
                           f"{child.log_path} ends:\n{log_tail(child.log_path)}")
