"""A local Redis Cluster of ``NODES`` masters, as ``nursery cluster up --redis-cluster`` runs it
and as the test suite's fixture does (tests/servers.py): the options that make a
``redis-server`` a cluster node, the ``redis-cli`` command that joins the nodes, and what a
node must say before it counts as ready. No I/O here: each caller runs the processes its own way.

Choices, and why:

- No replicas by default (a development and test topology: a stopped node's slots are then
  unserved until it is back, which is the fault the broker has to survive); one per master
  under ``cluster up --ha`` (``create_argv``'s ``replicas``), promoted by Redis Cluster itself.
- ``cluster-require-full-coverage no``: without it every node answers ``CLUSTERDOWN`` while
  one shard is down; with it the other shards keep working (losing a shard loses only the
  keys and channels of its slots).
- A node keeps its ``nodes.conf`` (its id, epoch and slots) across restarts, so one restarted
  on the same ports rejoins with its slots; data is not persisted (no RDB, no AOF).
- The cluster bus port is chosen like the client port (``--cluster-port``) instead of
  Redis's default (port + 10000), which could fall in the kernel's ephemeral range.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

NODES = 3
SLOTS = 16384
# How long a silent node takes to be marked failing. Without replicas nothing fails over, so
# this only decides how soon the others report the shard down, and how soon they forget it;
# with replicas (--ha) it is most of a failover: a master's replica takes over ~1-2 s after
# it (the election's delays), and the broker's users hear live messages again within 5 s.
NODE_TIMEOUT_MS = 1500


def node_args(*, bus_port: int, directory: Path) -> list[str]:
    """What to add to a ``redis-server`` command line to make it a cluster node whose
    ``nodes.conf`` lives in ``directory``."""
    return ["--cluster-enabled", "yes", "--cluster-port", str(bus_port),
            "--cluster-config-file", str(directory / "nodes.conf"),
            "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
            "--cluster-require-full-coverage", "no"]


def create_argv(redis_cli: str, host: str, ports: Sequence[int], replicas: int = 0) -> list[str]:
    """The command that joins empty nodes into one cluster, the slots split evenly between
    the masters (it fails on a node that already holds slots or knows other nodes). With
    ``replicas`` per master, ``len(ports) / (1 + replicas)`` nodes become masters and the
    others their replicas: a master that fails is replaced by its replica, elected by the
    other masters once it was silent ``NODE_TIMEOUT_MS``."""
    return [redis_cli, "--cluster", "create", *(f"{host}:{port}" for port in ports),
            "--cluster-replicas", str(replicas), "--cluster-yes"]


def parse_info(text: str) -> dict[str, str]:
    """``CLUSTER INFO``'s ``name:value`` lines as a dict."""
    pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {name.strip(): value.strip() for name, value in pairs}


def ready(info: dict[str, str], nodes: int = NODES) -> bool:
    """Whether a node, by its ``CLUSTER INFO``, serves as part of the whole cluster: state ok,
    every slot assigned and seen healthy, every node known."""
    return (info.get("cluster_state") == "ok"
            and info.get("cluster_slots_ok") == str(SLOTS)
            and info.get("cluster_known_nodes") == str(nodes))


def own_slots(cluster_nodes: str) -> str:
    """The slot ranges of the node that answered ``CLUSTER NODES`` (its ``myself`` line), as
    written there: ``0-5460``; empty when it holds none."""
    for line in cluster_nodes.splitlines():
        fields = line.split()
        if len(fields) >= 8 and "myself" in fields[2].split(","):
            return " ".join(f for f in fields[8:] if not f.startswith("["))  # [...]: migrating
    return ""
