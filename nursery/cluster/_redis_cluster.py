"""A local Redis Cluster of ``NODES`` masters, as ``nursery cluster up --redis-cluster`` runs it
(``--ha``: each master with ``REPLICAS`` replica) and as the test suite's fixtures do
(tests/servers.py): the options that make a ``redis-server`` a cluster node, the
``redis-cli`` command that joins the nodes, what a node must say before it counts as ready,
and its role. No I/O here: each caller runs the processes its own way.

Choices, and why:

- ``--redis-cluster``: no replicas, a development and test topology. A stopped node's slots
  are then unserved until it is back, which is the fault the broker has to survive.
- ``--ha``: one replica per master, and failover by Redis Cluster itself: the replica of a
  master silent for the node timeout is promoted (about 1-1.5 s after it), and the old master,
  when back, rejoins as its replica. The broker follows the slot map (redis_sharded), so a
  user's live delivery is back within 5 s of losing its master.
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

NODES = 3  # masters
REPLICAS = 1  # per master, with --ha
SLOTS = 16384
# How long a silent node takes to be marked failing. Without replicas nothing fails over, so
# this only decides how soon the others report the shard down, and how soon they forget it;
# with replicas (--ha) it is most of a failover: a master's replica takes over ~1-2 s after
# it (the election's delays), and the broker's users hear live messages again within 5 s.
NODE_TIMEOUT_MS = 1500


def node_args(*, bus_port: int, directory: Path, node_timeout_ms: int = NODE_TIMEOUT_MS) -> list[str]:
    """What to add to a ``redis-server`` command line to make it a cluster node whose
    ``nodes.conf`` lives in ``directory``."""
    return ["--cluster-enabled", "yes", "--cluster-port", str(bus_port),
            "--cluster-config-file", str(directory / "nodes.conf"),
            "--cluster-node-timeout", str(node_timeout_ms),
            "--cluster-require-full-coverage", "no"]


def create_argv(redis_cli: str, host: str, ports: Sequence[int], replicas: int = 0) -> list[str]:
    """The command that joins empty nodes into one cluster, the slots split evenly between
    ``len(ports) / (1 + replicas)`` masters, the other nodes their replicas (redis-cli picks
    which; ``own_role`` tells). A master that fails is replaced by its replica, elected by the
    other masters once it was silent for the node timeout. It fails on a node that already
    holds slots or knows other nodes."""
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


def _nodes(cluster_nodes: str) -> list[list[str]]:
    return [fields for line in cluster_nodes.splitlines() if len(fields := line.split()) >= 8]


def own_role(cluster_nodes: str) -> str | None:
    """"master" or "replica": the role of the node that answered ``CLUSTER NODES``."""
    for fields in _nodes(cluster_nodes):
        flags = fields[2].split(",")
        if "myself" in flags:
            return "master" if "master" in flags else "replica" if "slave" in flags else None
    return None


def replicated(cluster_nodes: str, replicas: int = REPLICAS) -> bool:
    """Whether, in a ``CLUSTER NODES`` reply, every master serving slots has ``replicas``
    replicas attached (neither failing nor disconnected): a master lost now fails over."""
    nodes = _nodes(cluster_nodes)
    attached: dict[str, int] = {}
    for fields in nodes:
        flags = fields[2].split(",")
        if "slave" in flags and not {"fail", "fail?"} & set(flags) and fields[7] == "connected":
            attached[fields[3]] = attached.get(fields[3], 0) + 1
    masters = [fields[0] for fields in nodes if "master" in fields[2].split(",") and len(fields) > 8]
    return bool(masters) and all(attached.get(master, 0) >= replicas for master in masters)


def failover_time(node_timeout_ms: int) -> float:
    """Seconds within which a lost master's replica has taken over, with a margin: the node
    timeout, the failure reports gossiped, the election's 0.5-1 s delay (measured: promoted
    3.1-3.3 s after a SIGKILL with the 1.5 s timeout on a loaded 2-core machine)."""
    return 2 * node_timeout_ms / 1000 + 2.0


def describe_role(role: list[object]) -> str | None:
    """A node's ``ROLE`` reply, in words: "master, 1 replica", "replica, in sync"; None for a
    replica not (yet) in sync with its master (it would not be a good heir)."""
    kind = role[0] if role else None
    if kind == b"master":
        replicas = role[2] if len(role) > 2 and isinstance(role[2], list) else []
        return f"master, {len(replicas)} replica{'' if len(replicas) == 1 else 's'}"
    if kind == b"slave":
        return "replica, in sync" if len(role) > 3 and role[3] == b"connected" else None
    return None
