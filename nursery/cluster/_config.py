"""What ``nursery cluster up`` runs (``ClusterConfig``), its files, and its error."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nursery.cluster import _redis_cluster as redis_cluster
from nursery.cluster._tls import proxy_url
from nursery.config import Settings
from nursery.errors import NurseryError

DEFAULT_DIR = Path(".nursery/cluster")
STATE_FILE = "state.json"  # written by the supervisor, read by the other commands
LOCK_FILE = "supervisor.lock"  # flock'ed by the supervisor for its lifetime
SECRET_FILE = "secret_key"
LOG_DIR = "logs"


class ClusterError(NurseryError):
    """Something the operator has to fix; the message says what."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """What ``up`` runs. Durations in seconds.

    ``drain_delay`` (default: ``health_interval`` + 1 s, or ``NURSERY_DRAIN_DELAY`` when that
    is set) must exceed Caddy's ``health_interval``; ``shutdown_timeout`` is the instances'
    ``NURSERY_SHUTDOWN_TIMEOUT``, after which (plus a margin) a stopping instance is killed."""

    directory: Path = DEFAULT_DIR
    instances: int = 3
    base_port: int = 4001
    proxy_port: int = 8080
    host: str = "127.0.0.1"
    database_url: str | None = None
    redis_url: str | None = None
    secret_key: str | None = None
    caddy: str = "caddy"
    caddyfile: Path | None = None
    redis_server: str = "redis-server"
    redis_cluster: bool = False  # a Redis Cluster (of our own, or NURSERY_REDIS_URL's node)
    redis_cli: str = "redis-cli"  # forms our own cluster
    ha: bool = False  # etcd + ha_nodes PostgreSQL nodes under Patroni (_ha); Redis with replicas
    ha_nodes: int = 3
    db_sync_strict: bool = True  # NURSERY_DB_SYNC_STRICT
    etcd: str = "etcd"
    patroni: str = "patroni"
    health_interval: float = 1.0
    drain_delay: float | None = None
    shutdown_timeout: float = 15.0
    ready_timeout: float = 60.0
    python: str = sys.executable
    tls: bool = False  # HTTPS with Caddy's local CA (``_tls``)
    proxy_host: str | None = None  # the address Caddy binds; None: ``host``

    @property
    def effective_drain_delay(self) -> float:
        return self.drain_delay if self.drain_delay is not None else self.health_interval + 1.0

    @property
    def uses_redis_cluster(self) -> bool:
        """The instances' Redis is a cluster: ``redis_cluster``, or ``ha`` with our own Redis
        (a cluster whose masters each have a replica)."""
        return self.redis_cluster or (self.ha and not self.redis_url)

    @property
    def redis_replicas(self) -> int:
        """Replicas per master of our own Redis Cluster: one with ``ha``."""
        return redis_cluster.REPLICAS if self.ha else 0

    @property
    def proxy_bind(self) -> str:
        return self.proxy_host or self.host

    @property
    def proxy_url(self) -> str:
        return proxy_url(self.proxy_bind, self.proxy_port, self.tls)

    @property
    def instance_ports(self) -> list[int]:
        return [self.base_port + i for i in range(self.instances)]

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> ClusterConfig:
        """Database, Redis, secret and timeouts from the ``NURSERY_*`` variables that
        ``nursery serve`` reads too; ``overrides`` (non-None) win."""
        environ = dict(os.environ if environ is None else environ)
        settings = Settings.from_env(environ)
        values: dict[str, Any] = {
            "database_url": settings.database_url,
            "redis_url": settings.redis_url,
            "redis_cluster": settings.redis_cluster,
            "secret_key": settings.secret_key,
            "shutdown_timeout": settings.shutdown_timeout,
            "db_sync_strict": settings.db_sync_strict,
            "caddy": environ.get("NURSERY_CADDY") or "caddy",
        }
        if environ.get("NURSERY_DRAIN_DELAY"):
            values["drain_delay"] = settings.drain_delay
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def find_caddyfile() -> Path:
    """``conf/Caddyfile`` of this checkout, else of the working directory."""
    for base in (Path(__file__).resolve().parents[2], Path.cwd()):
        candidate = base / "conf" / "Caddyfile"
        if candidate.is_file():
            return candidate
    raise ClusterError("no conf/Caddyfile found: run from the nursery checkout or pass --caddyfile")

