"""PostgreSQL with automatic failover: Patroni nodes sharing a leader lock in etcd, as
``nursery cluster up --ha`` runs them and as the test suite's fixture does. This module
writes a node's configuration and speaks Patroni's REST API; it starts nothing.

What Patroni does (docs/operations.md has the operator's view): each node runs one
PostgreSQL; the node holding the leader key in etcd (a lease of ``ttl`` seconds, renewed every
``loop_wait``) runs it as the primary, the others stream from it. When the leader key expires
(the primary's machine died or hung) the synchronous standby takes it and is promoted; a
primary that cannot renew its key demotes itself, and one that comes back after its key was
taken rejoins as a standby (``pg_rewind`` if its timeline diverged). We implement no election
and no fencing of our own.

Durability: ``synchronous_mode`` makes the standby synchronous, so a commit is acknowledged
only once it is on two nodes, and only the synchronous standby may be promoted: a write
answered 2xx survives the loss of the primary. ``synchronous_mode_strict`` decides what
happens when the standby itself is down: ``True`` (our default, ``NURSERY_DB_SYNC_STRICT``)
makes commits wait for it, so writes fail rather than live on one disk; ``False`` lets the
primary carry on alone.

Timing (seconds): ``ttl`` bounds how long a lost primary holds the lock, ``loop_wait`` is how
often each node acts, ``retry_timeout`` how long etcd or PostgreSQL may be silent before a
node gives up the lock; Patroni requires ``loop_wait + 2 * retry_timeout <= ttl``.

Patroni reads YAML, a superset of JSON: the configuration is written as JSON (no YAML writer
needed).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCOPE = "nursery"
SUPERUSER = "postgres"
REPLICATION_USER = "replicator"
TTL = 7
LOOP_WAIT = 1
RETRY_TIMEOUT = 3
REST_TIMEOUT = 3.0


@dataclass(frozen=True, slots=True)
class Node:
    """One Patroni node: its name, PostgreSQL port, REST API port and directory."""

    name: str
    host: str
    pg_port: int
    api_port: int
    directory: Path

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.api_port}"

    @property
    def config_path(self) -> Path:
        return self.directory / "patroni.json"

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"


def node_config(node: Node, *, etcd_url: str, bin_dir: Path, strict: bool = True,
                ttl: int = TTL, loop_wait: int = LOOP_WAIT,
                retry_timeout: int = RETRY_TIMEOUT) -> dict[str, Any]:
    """Patroni's configuration for ``node``. Local trust authentication on the loopback only:
    a development and test topology (docs/operations.md says what production changes)."""
    trust = [f"host all all {node.host}/32 trust",
             f"host replication {REPLICATION_USER} {node.host}/32 trust",
             "local all all trust"]
    return {
        "scope": SCOPE,
        "name": node.name,
        "log": {"level": "INFO"},
        "restapi": {"listen": f"{node.host}:{node.api_port}",
                    "connect_address": f"{node.host}:{node.api_port}"},
        # etcd's v2 API, not "etcd3": Patroni 3.0.2 (Debian 12) renews the leader key through
        # v3 with an unconditional put, so a primary that was hung past its ttl overwrites
        # the key its successor took (patroni/patroni#2689, fixed in 3.0.3): two primaries,
        # writes lost. Seen here (the node_hung fault); v2 renews with a compare-and-swap
        # on its own name, which fails, and the old primary demotes.
        "etcd": {"hosts": [etcd_url.removeprefix("http://")]},
        "bootstrap": {
            "dcs": {
                "ttl": ttl, "loop_wait": loop_wait, "retry_timeout": retry_timeout,
                "maximum_lag_on_failover": 1024 * 1024,
                "synchronous_mode": True,
                "synchronous_mode_strict": strict,
                "postgresql": {
                    "use_pg_rewind": True,
                    "parameters": {"wal_level": "replica", "hot_standby": "on",
                                   "wal_log_hints": "on", "max_wal_senders": 10,
                                   "max_replication_slots": 10, "wal_keep_size": "128MB",
                                   # A standby retries its stream every 5 s by default: after a
                                   # failover that delays the new primary's first sync standby,
                                   # and with strict mode every commit waits for one.
                                   "wal_retrieve_retry_interval": "250ms",
                                   # A fast node: small shared memory and no fsync waits
                                   # are not what makes it durable here, the standby is.
                                   "shared_buffers": "32MB", "max_connections": 200},
                },
            },
            "initdb": [{"encoding": "UTF8"}, {"auth": "trust"}],
        },
        "postgresql": {
            "listen": f"{node.host}:{node.pg_port}",
            "connect_address": f"{node.host}:{node.pg_port}",
            "data_dir": str(node.data_dir),
            "bin_dir": str(bin_dir),
            "pgpass": str(node.directory / "pgpass"),
            "authentication": {
                # No passwords: trust on the loopback (an empty one would fail initdb).
                "superuser": {"username": SUPERUSER},
                "replication": {"username": REPLICATION_USER},
            },
            "pg_hba": trust,
            "parameters": {"unix_socket_directories": str(node.directory)},
        },
        "tags": {"nofailover": False, "noloadbalance": False, "clonefrom": False,
                 "nosync": False},
    }


def write_node_config(node: Node, config: dict[str, Any]) -> None:
    node.directory.mkdir(parents=True, exist_ok=True)
    node.config_path.write_text(json.dumps(config, indent=2) + "\n")


def database_url(nodes: Sequence[Node], database: str) -> str:
    """The URL the instances use: every node, and only a read-write one will do."""
    hosts = ",".join(f"{n.host}:{n.pg_port}" for n in nodes)
    return f"postgresql://{SUPERUSER}@{hosts}/{database}?target_session_attrs=read-write"


@dataclass(frozen=True, slots=True)
class Member:
    """A node as Patroni's ``GET /cluster`` describes it. ``role``: ``leader``,
    ``sync_standby`` or ``replica``; ``lag``: bytes of WAL behind the leader (None: unknown,
    or the leader)."""

    name: str
    role: str
    state: str
    host: str
    port: int
    lag: int | None

    @property
    def primary(self) -> bool:
        return self.role in ("leader", "master", "standby_leader")


class PatroniError(RuntimeError):
    """A Patroni REST call failed; the message says how."""


def members(api_url: str, timeout: float = REST_TIMEOUT) -> list[Member]:
    """The cluster as the node at ``api_url`` sees it (blocking: run it in a thread)."""
    body = _request("GET", f"{api_url}/cluster", None, timeout)
    found = []
    for m in json.loads(body).get("members", []):
        lag = m.get("lag")
        found.append(Member(str(m.get("name")), str(m.get("role")), str(m.get("state")),
                            str(m.get("host")), int(m.get("port") or 0),
                            lag if isinstance(lag, int) else None))
    return found


def switchover(api_url: str, *, leader: str, candidate: str | None = None,
               timeout: float = 30.0) -> str:
    """Ask Patroni to hand the primary role from ``leader`` to ``candidate`` (None: the
    synchronous standby) now; returns Patroni's answer. Blocking: run it in a thread."""
    body: dict[str, str] = {"leader": leader}
    if candidate:
        body["candidate"] = candidate
    return _request("POST", f"{api_url}/switchover", body, timeout).decode(errors="replace")


def _request(method: str, url: str, body: dict[str, Any] | None, timeout: float) -> bytes:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return bytes(response.read())
    except urllib.error.HTTPError as exc:
        raise PatroniError(f"{method} {url}: {exc.code} {exc.read().decode(errors='replace')}") from exc
    except (OSError, ValueError) as exc:
        raise PatroniError(f"{method} {url}: {exc}") from exc
