"""``run_cluster``: the lifetime of a local cluster, from the database to the last child.

The supervisor (``_supervisor.py``) decides what runs and when; this module owns the signal
receiver, the supervisor lock, the database's data directory (a private PostgreSQL, run and
restarted by the supervisor like every other child, unless a URL is given) and the nursery the
children live in.
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import Any

import trio

from nursery.cluster._config import LOG_DIR, ClusterConfig, ClusterError
from nursery.cluster._prometheus import write_prometheus_config
from nursery.cluster._rolling import roll_when_asked
from nursery.cluster._state import cluster_secret, supervisor_lock
from nursery.cluster._supervisor import Supervisor
from nursery.cluster._tls import trust_instructions
from nursery.stores.embedded import PrivatePostgres

log = logging.getLogger("nursery.cluster")


async def run_cluster(
    config: ClusterConfig, *, task_status: trio.TaskStatus[Supervisor] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run the cluster until SIGTERM/SIGINT (handled here); ``task_status.started`` with the
    supervisor once every process is ready. Raises ``ClusterError`` when startup fails, after
    stopping whatever had started.

    Resource handling: every child is stopped (instances first, PostgreSQL last) before this
    returns, also on error; on cancellation the children still running are killed (SIGKILL)."""
    directory = config.directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / LOG_DIR).mkdir(exist_ok=True)
    with supervisor_lock(directory), trio.open_signal_receiver(
        signal.SIGTERM, signal.SIGINT, signal.SIGHUP
    ) as signals:
        secret_key = config.secret_key or cluster_secret(directory)
        database_url, database_info, postgres, postgres_argv = await _database(config, directory)
        supervisor = Supervisor(config, directory, database_url, database_info, postgres)
        supervisor.plan(secret_key, postgres_argv)
        prometheus = write_prometheus_config(
            directory, [f"{config.host}:{port}" for port in config.instance_ports])
        supervisor.write_state()
        failure: ClusterError | None = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(supervisor.handle_signals, signals)
            with supervisor.startup_scope:
                try:
                    await supervisor.start_all(nursery)
                except ClusterError as exc:
                    failure = exc
            if failure is None and not supervisor.stop_requested.is_set():
                supervisor.state = "ready"
                supervisor.write_state()
                log.info("cluster ready: %s → %d instance(s) (%s); logs in %s",
                         config.proxy_url, config.instances,
                         ", ".join(str(p) for p in config.instance_ports), directory / LOG_DIR)
                log.info("metrics: each instance's /metrics (not through the proxy); "
                         "prometheus --config.file=%s", prometheus)
                if config.tls:
                    log.info("%s", trust_instructions(directory, config.proxy_bind, config.proxy_port))
                task_status.started(supervisor)
                nursery.start_soon(roll_when_asked, supervisor)
                await supervisor.stop_requested.wait()
            log.info("stopping the cluster")
            await supervisor.stop_all()
            nursery.cancel_scope.cancel()
        supervisor.state = "stopped"
        supervisor.write_state()
        if failure is not None:
            raise failure
    log.info("cluster stopped")


async def _database(
    config: ClusterConfig, directory: Path
) -> tuple[str, dict[str, Any], PrivatePostgres | None, list[str] | None]:
    """(URL, what the state file says of it, the private server, its command line)."""
    if config.database_url:
        return config.database_url, {"external": True}, None, None
    if config.ha:  # the supervisor plans the nodes and their URL (_ha)
        return "", {"external": False, "ha": True}, None, None
    log.info("preparing PostgreSQL in %s", directory / "pg")
    server = PrivatePostgres(directory, timeout=config.ready_timeout)
    argv = await trio.to_thread.run_sync(server.prepare)  # initdb the first time: seconds
    return server.url, {"external": False, "port": server.port, "data": str(server.pg_dir)}, server, argv
