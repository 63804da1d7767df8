"""What ``nursery cluster up`` runs: the supervisor's children (PostgreSQL, or etcd and the
Patroni nodes with ``--ha``; Redis, or a Redis Cluster's nodes; the instances; Caddy), each
with its command line, environment, log file and readiness probe, worked out before anything
starts. ``_supervisor`` runs them."""

from __future__ import annotations

import os
import shutil
import signal
from functools import partial
from pathlib import Path
from typing import Any

from nursery.cluster import _ha
from nursery.cluster import _redis_cluster as redis_cluster
from nursery.cluster import _tls as tls
from nursery.cluster._child import Child
from nursery.cluster._config import LOG_DIR, ClusterConfig, find_caddyfile
from nursery.cluster._probes import (
    TLS,
    postgres_probe_of,
    readyz_probe,
    redis_cluster_probe_of,
    redis_probe_of,
)
from nursery.stores.embedded import PrivatePostgres, free_port


def proxy_probe_address(config: ClusterConfig) -> tuple[str, int]:
    """Where this machine reaches the proxy: over TLS, a name its certificate holds."""
    bind = config.proxy_bind
    host = tls.certificate_names(bind)[0] if config.tls else bind
    return host, config.proxy_port


def proxy_tls(config: ClusterConfig, directory: Path) -> TLS | None:
    return partial(tls.client_context, directory) if config.tls else None


class Plan:
    """The children of one cluster directory, and what the instances are told of the data
    tier (``database_url``, ``redis_url``: with ``--ha`` or a Redis Cluster, worked out here)."""

    def __init__(self, config: ClusterConfig, directory: Path, database_url: str,
                 database_info: dict[str, Any], postgres: PrivatePostgres | None,
                 redis_url: str) -> None:
        self.config = config
        self.directory = directory
        self.database_url = database_url
        self.database_info = database_info
        self.postgres = postgres
        self.redis_url = redis_url
        self.children: list[Child] = []
        self.instances: list[Child] = []
        self.caddy: Child | None = None
        self.caddy_admin: str | None = None
        self.ha_nodes: list[Any] = []  # the Patroni nodes of --ha (_patroni.Node)

    def build(self, secret_key: str, postgres_argv: list[str] | None = None) -> None:
        """The children to run; ``postgres_argv``: the private PostgreSQL's command line."""
        config, logs = self.config, self.directory / LOG_DIR
        base_env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("NURSERY_PROXY_", "NURSERY_UPSTREAMS", "NURSERY_CADDY"))}
        if self.postgres is not None and postgres_argv:
            pg = self.postgres
            self.children.append(Child(
                "postgres", "postgres", postgres_argv, _postgres_env(base_env), "127.0.0.1",
                pg.port, logs / "postgres.log", postgres_probe_of("127.0.0.1", pg.port),
                stop_signal=signal.SIGINT))
        if config.ha and not config.database_url:
            self._plan_ha(base_env)
        if not config.redis_url and config.uses_redis_cluster:
            self._plan_redis_cluster(base_env)
        elif not config.redis_url:
            port = free_port(config.host)
            self.redis_url = f"redis://{config.host}:{port}/0"
            redis_dir = self.directory / "redis"
            redis_dir.mkdir(exist_ok=True)
            self.children.append(Child(
                "redis", "redis",
                [config.redis_server, "--port", str(port), "--bind", config.host, "--save", "",
                 "--appendonly", "no", "--dir", str(redis_dir), "--daemonize", "no"],
                base_env, config.host, port, logs / "redis.log", redis_probe_of(config.host, port)))
        for i, port in enumerate(config.instance_ports, start=1):
            name = f"instance-{i}"
            data_dir = self.directory / "instances" / name
            data_dir.mkdir(parents=True, exist_ok=True)
            env = {**base_env,
                   "NURSERY_DATABASE_URL": self.database_url,
                   "NURSERY_REDIS_URL": self.redis_url,
                   "NURSERY_REDIS_CLUSTER": "true" if config.uses_redis_cluster else "false",
                   "NURSERY_SECRET_KEY": secret_key,
                   "NURSERY_INSTANCE_NAME": name,
                   "NURSERY_DRAIN_DELAY": f"{config.effective_drain_delay:g}",
                   "NURSERY_SHUTDOWN_TIMEOUT": f"{config.shutdown_timeout:g}",
                   "NURSERY_DATA_DIR": str(data_dir),
                   # behind Caddy: rate limits key on the address Caddy saw
                   "NURSERY_TRUST_PROXY_HEADERS": "1",
                   **({"NURSERY_DB_TIMEOUT": f"{_ha.DB_TIMEOUT:g}"} if self.ha_nodes else {}),
                   **{k: v for k, v in base_env.items()
                      if k in ("NURSERY_TRUST_PROXY_HEADERS", "NURSERY_DB_TIMEOUT")}}
            child = Child(name, "instance",
                          [config.python, "-m", "nursery", "serve", "--host", config.host,
                           "--port", str(port)],
                          env, config.host, port, logs / f"{name}.log",
                          readyz_probe(config.host, port))
            self.children.append(child)
            self.instances.append(child)
        caddy_home = self.directory / "caddy"
        caddy_home.mkdir(exist_ok=True)
        caddyfile = config.caddyfile or find_caddyfile()
        admin_port = free_port(config.host)
        caddy_env = {**base_env,
                     "HOME": str(caddy_home),
                     "XDG_CONFIG_HOME": str(caddy_home / "config"),
                     "XDG_DATA_HOME": str(caddy_home / "data"),
                     "NURSERY_SITE": f":{config.proxy_port}",
                     **(tls.caddy_env(config.proxy_bind, config.proxy_port) if config.tls else {}),
                     "NURSERY_PROXY_BIND": config.proxy_bind,
                     "NURSERY_UPSTREAMS": " ".join(f"{config.host}:{p}" for p in config.instance_ports),
                     "NURSERY_PROXY_HEALTH_INTERVAL": f"{round(config.health_interval * 1000)}ms",
                     "NURSERY_CADDY_ADMIN": f"{config.host}:{admin_port}"}
        for key in ("NURSERY_PROXY_OPTIONS",):  # newer-Caddy extras pass through
            if os.environ.get(key):
                caddy_env[key] = os.environ[key]
        self.caddy = Child("caddy", "caddy",
                           [config.caddy, "run", "--config", str(caddyfile), "--adapter", "caddyfile"],
                           caddy_env, config.proxy_bind, config.proxy_port, logs / "caddy.log",
                           readyz_probe(*proxy_probe_address(config),
                                        tls=proxy_tls(config, self.directory)))
        self.caddy_admin = f"{config.host}:{admin_port}"
        self.children.append(self.caddy)

    def _plan_ha(self, base_env: dict[str, str]) -> None:
        taken = {*self.config.instance_ports, self.config.proxy_port}
        children, self.ha_nodes, self.database_url = _ha.plan(
            self.config, self.directory, base_env, taken)
        self.children.extend(children)
        self.database_info = {**self.database_info, "nodes": [n.name for n in self.ha_nodes],
                              "sync_strict": self.config.db_sync_strict}

    def _plan_redis_cluster(self, base_env: dict[str, str]) -> None:
        config, logs = self.config, self.directory / LOG_DIR
        root = self.directory / "redis-cluster"
        # A new cluster every time: its ports are chosen anew, and a nodes.conf left by an
        # earlier run would name peers on the old ones.
        shutil.rmtree(root, ignore_errors=True)
        taken = {*config.instance_ports, config.proxy_port}
        nodes = redis_cluster.NODES * (1 + config.redis_replicas)
        ports: list[int] = []
        while len(ports) < 2 * nodes:  # a client and a bus port per node
            if (port := free_port(config.host)) not in taken:
                taken.add(port)
                ports.append(port)
        for i in range(nodes):
            port, bus_port = ports[2 * i], ports[2 * i + 1]
            node_dir = root / f"node-{i + 1}"
            node_dir.mkdir(parents=True)
            child = Child(
                f"redis-{i + 1}", "redis-node",
                [config.redis_server, "--port", str(port), "--bind", config.host, "--save", "",
                 "--appendonly", "no", "--dir", str(node_dir), "--daemonize", "no",
                 *redis_cluster.node_args(bus_port=bus_port, directory=node_dir)],
                base_env, config.host, port, logs / f"redis-{i + 1}.log",
                redis_cluster_probe_of(config.host, port, nodes))
            if config.redis_replicas:
                # Back before its replica took over, a crashed master (no persistence) would
                # serve its slots again empty; later, it rejoins as that replica's replica.
                child.restart_delay = redis_cluster.failover_time(redis_cluster.NODE_TIMEOUT_MS)
                child.info = {"role": None}
            self.children.append(child)
        urls = [f"redis://{config.host}:{port}/0" for port in ports[::2]]
        # A seed: clients find the rest. With replicas, every node: an instance starting
        # while one is down (being replaced) still finds the cluster.
        self.redis_url = ",".join(urls) if config.redis_replicas else urls[0]


def _postgres_env(base_env: dict[str, str]) -> dict[str, str]:
    # PGHOST, PGDATA, PGOPTIONS... of the operator's shell must not redirect the server.
    env = {k: v for k, v in base_env.items() if not k.startswith("PG")}
    env["LC_MESSAGES"] = "C"  # its log lines stay greppable
    return env
