"""A one-member etcd, the store Patroni keeps its leader lock in, as ``nursery cluster up --ha``
runs it and as the test suite's fixture does. No I/O here: each caller runs the process its
own way.

One member is a single point of failure for *elections* only: while etcd is down nobody can
take the leader lock, and Patroni demotes a primary whose lock it cannot renew (it cannot tell
a lost etcd from a partition). Production runs three or five members on separate machines
(docs/operations.md); locally one is enough to exercise every failover path.

The heartbeat and election timeouts are lowered from etcd's 100 ms / 1000 ms so a lease
granted with Patroni's short ``ttl`` is honoured (etcd's minimum lease is 1.5 election
timeouts) on a busy machine too.
"""

from __future__ import annotations

from pathlib import Path


def etcd_argv(etcd: str, *, host: str, client_port: int, peer_port: int, directory: Path,
              name: str = "etcd-1") -> list[str]:
    client, peer = f"http://{host}:{client_port}", f"http://{host}:{peer_port}"
    return [etcd, "--name", name, "--data-dir", str(directory),
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"{name}={peer}", "--initial-cluster-state", "new",
            "--heartbeat-interval", "100", "--election-timeout", "1000",
            "--enable-v2=true",  # Patroni's "etcd" (v2) client: see _patroni
            "--logger", "zap", "--log-level", "warn"]


def etcd_url(host: str, client_port: int) -> str:
    return f"http://{host}:{client_port}"
