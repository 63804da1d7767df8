"""Real servers for the test suite, started and stopped synchronously (subprocess) so that
session-scoped pytest fixtures can own them (pytest-trio's async fixtures are per-test).

- ``scratch_dir()``: a temporary directory, on RAM (/dev/shm) when there is room: creating a
  database there takes ~40 ms instead of ~350 ms on this machine's disk.
- ``RedisServer``: a private ``redis-server`` (no persistence) on a fixed port that can be
  stopped and started again on the same port, for fault tests.
- ``RedisCluster``: three such servers as the masters of one Redis Cluster (no replicas),
  joined by ``redis-cli --cluster create``; one node can be stopped and started again, and
  rejoins with its slots. With ``replicas=1`` (as ``nursery cluster up --ha``): six, each
  master with a replica that Redis promotes when its master is lost; a killed master started
  again rejoins as a replica.
- PostgreSQL: ``nursery.stores.embedded.PrivatePostgres`` (the same code ``nursery serve``
  uses), re-exported here with ``new_database()``.

Whoever calls ``start()`` owns the process and calls ``stop()``; the fixtures in conftest.py do
it at teardown. Every wait is bounded; a server that does not come up raises
``ServerFailed`` carrying its log tail.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from nursery.cluster import _redis_cluster as redis_cluster
from nursery.stores.embedded import PrivatePostgres, free_port

__all__ = ["PrivatePostgres", "RedisCluster", "RedisServer", "ServerFailed", "free_port",
           "new_database", "scratch_dir"]

RAM_DIR = Path("/dev/shm")
RAM_DIR_MIN_FREE = 2 * 1024**3  # a cluster is ~40 MB, each database ~8 MB
LOG_TAIL_LINES = 25


class ServerFailed(RuntimeError):
    """A test server did not start or stop in time."""


def scratch_dir(prefix: str) -> Path:
    """A new empty temporary directory; the caller removes it (``shutil.rmtree``)."""
    parent: Path | None = None
    if RAM_DIR.is_dir() and os.access(RAM_DIR, os.W_OK):
        if shutil.disk_usage(RAM_DIR).free >= RAM_DIR_MIN_FREE:
            parent = RAM_DIR
    return Path(tempfile.mkdtemp(prefix=prefix, dir=parent))


class _Server(Protocol):
    def start(self) -> object: ...

    def stop(self) -> object: ...


@contextmanager
def running[S: _Server](prefix: str, make: Callable[[Path], S]) -> Iterator[S]:
    """``make(directory)`` started in a new scratch directory; stopped, and the directory
    removed, when the block ends (what every server fixture does)."""
    directory = scratch_dir(prefix)
    server = make(directory)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def new_database(server: PrivatePostgres) -> str:
    """Create a uniquely named empty database on ``server``; return its URL."""
    return server.create_database(f"test_{uuid.uuid4().hex}")


class RedisServer:
    """``redis-server`` on ``127.0.0.1:port`` with its files in ``directory``; no snapshots,
    no AOF. ``port`` is fixed at construction so a restart keeps the URL; ``options`` are
    added to its command line."""

    def __init__(self, directory: Path, *, port: int | None = None,
                 options: Sequence[str] = ()) -> None:
        self.directory = directory
        self.port = port if port is not None else free_port()
        self.options = list(options)
        self.log_path = directory / "redis.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 10.0) -> str:
        """Start the server (no-op if running) and wait until it answers PING; return URL."""
        if self.running:
            return self.url
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", str(self.directory),
                "--logfile", str(self.log_path), "--daemonize", "no", *self.options]
        try:
            self._process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, start_new_session=True,  # no terminal ^C
            )
        except OSError as exc:
            raise ServerFailed(f"cannot run redis-server: {exc}") from exc
        deadline = time.monotonic() + timeout
        while not self.ping():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise ServerFailed(f"redis-server on port {self.port} did not answer PING "
                                   f"within {timeout}s; {self.log_path} ends:\n{self._log_tail()}")
            time.sleep(0.01)
        return self.url

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (SIGKILL after ``timeout``) and wait for exit; no-op if not running."""
        self._signal(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL, as in a crash, and wait for exit."""
        self._signal(signal.SIGKILL, 5.0)

    def _signal(self, signum: int, timeout: float) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signum)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5.0)

    def ping(self, timeout: float = 1.0) -> bool:
        try:
            return self.command("PING", timeout=timeout) == b"+PONG"
        except OSError:
            return False

    def flushall(self) -> None:
        reply = self.command("FLUSHALL")
        if reply != b"+OK":
            raise ServerFailed(f"FLUSHALL on port {self.port} answered {reply!r}")

    def command(self, *args: str, timeout: float = 5.0) -> bytes:
        """Send one command; return the first line of the reply (enough for status replies).
        Raises OSError when the server cannot be reached."""
        return self._request(args, timeout, whole=False).split(b"\r\n", 1)[0]

    def text(self, *args: str, timeout: float = 5.0) -> str:
        """Send one command whose reply is a bulk string (``CLUSTER INFO``); return it.
        Raises OSError when the server cannot be reached, ``ServerFailed`` on another reply."""
        reply = self._request(args, timeout, whole=True)
        head, _, body = reply.partition(b"\r\n")
        if not head.startswith(b"$"):
            raise ServerFailed(f"{' '.join(args)} on port {self.port} answered {head!r}")
        return body[:int(head[1:])].decode()

    def _request(self, args: Sequence[str], timeout: float, whole: bool) -> bytes:
        request = f"*{len(args)}\r\n".encode()
        for arg in args:
            data = arg.encode()
            request += b"$%d\r\n%s\r\n" % (len(data), data)
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
            sock.sendall(request)
            reply = b""
            while not _complete(reply, whole):
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionResetError("redis closed the connection")
                reply += chunk
        return reply

    def _log_tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-LOG_TAIL_LINES:])


def _complete(reply: bytes, whole: bool) -> bool:
    """Whether ``reply`` holds its first line (and, with ``whole``, a bulk string's body)."""
    head, found, body = reply.partition(b"\r\n")
    if not found:
        return False
    if not whole or not head.startswith(b"$") or head == b"$-1":
        return True
    return len(body) >= int(head[1:]) + 2


class RedisCluster:
    """``nodes`` redis-servers (``RedisServer``, files in ``directory/node-N``) that are the
    masters of one Redis Cluster, with the options of ``nursery cluster up --redis-cluster``
    (``nursery.cluster.redis_cluster``: no replicas, the other shards keep serving while one
    is down). Ports (client and cluster bus) are chosen once, so a node restarts on the same
    ones and rejoins with its slots (its nodes.conf is kept; its data is not).

    ``start`` returns once every node reports the whole cluster healthy (``ready``); so does
    ``start_node``. Whoever calls ``start`` calls ``stop``.

    ``replicas``: per master (``nodes`` counts them too: 6 nodes, 1 replica: 3 masters), as
    ``--ha`` runs them (``node_timeout_ms``: its cluster-node-timeout); ``ready``
    then also waits until every master has its replicas attached and in sync. Which node is
    a master is Redis's choice and changes on failover: ``role`` tells."""

    def __init__(self, directory: Path, *, nodes: int = redis_cluster.NODES, replicas: int = 0,
                 node_timeout_ms: int | None = None) -> None:
        self.directory = directory
        self.replicas = replicas
        if node_timeout_ms is None:
            node_timeout_ms = redis_cluster.NODE_TIMEOUT_MS
        ports: list[int] = []
        while len(ports) < 2 * nodes:  # each node's client and bus ports, all distinct
            if (port := free_port()) not in ports:
                ports.append(port)
        self.nodes: list[RedisServer] = []
        for i in range(nodes):
            node_dir = directory / f"node-{i}"
            node_dir.mkdir(parents=True, exist_ok=True)
            self.nodes.append(RedisServer(node_dir, port=ports[2 * i], options=redis_cluster.node_args(
                bus_port=ports[2 * i + 1], directory=node_dir, node_timeout_ms=node_timeout_ms)))
        self._created = False
        self._ids: dict[int, str] = {}  # node index → cluster id, asked once

    @property
    def urls(self) -> list[str]:
        """One URL per node (the cluster has a single database: 0)."""
        return [node.url for node in self.nodes]

    @property
    def url(self) -> str:
        """The first node's URL: a seed from which a client discovers the others."""
        return self.nodes[0].url

    def start(self, timeout: float = 30.0) -> str:
        """Start every node not running, join them into a cluster the first time, and wait
        until every node is ``ready``; return ``url``."""
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            node.start(timeout)
        if not self._created:
            self._create(max(1.0, deadline - time.monotonic()))
            self._created = True
        self.wait_ready(max(1.0, deadline - time.monotonic()))
        for index in range(len(self.nodes)):
            self.node_id(index)  # known before a test stops any node
        return self.url

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def stop_node(self, index: int) -> None:
        """Stop one node (SIGTERM): the slots it serves are unserved until ``start_node``."""
        self.nodes[index].stop()

    def start_node(self, index: int, timeout: float = 30.0) -> None:
        """Start a stopped node again on its ports; return once the cluster is whole again
        (the node serves its slots, every other node counts it healthy)."""
        deadline = time.monotonic() + timeout
        self.nodes[index].start(timeout)
        self.wait_ready(max(1.0, deadline - time.monotonic()))

    def stop_node_abruptly(self, index: int) -> None:
        """SIGKILL one node, as in a crash (with replicas: its replica takes over)."""
        self.nodes[index].kill()

    def ready(self) -> bool:
        """Every node answers and reports the whole cluster healthy (``redis_cluster.ready``);
        with replicas, each master's are attached (``redis_cluster.replicated``) and in sync."""
        try:
            infos = [redis_cluster.parse_info(node.text("CLUSTER", "INFO", timeout=1.0))
                     for node in self.nodes]
            if not all(redis_cluster.ready(info, len(self.nodes)) for info in infos):
                return False
            if not self.replicas:
                return True
            return self._replicas_linked() and all(
                redis_cluster.replicated(node.text("CLUSTER", "NODES", timeout=1.0), self.replicas)
                for node in self.nodes)
        except (OSError, ServerFailed):
            return False

    def _replicas_linked(self) -> bool:
        """Every replica streams from its master (a replica that never did cannot take over:
        its data's age is unknown)."""
        linked = 0
        for node in self.nodes:
            info = redis_cluster.parse_info(node.text("INFO", "replication", timeout=1.0))
            linked += info.get("role") == "slave" and info.get("master_link_status") == "up"
        return linked == len(self.nodes) * self.replicas // (1 + self.replicas)

    def role(self, index: int) -> str | None:
        """"master" or "replica": what node ``index`` says it is now. Raises OSError when
        it cannot be reached."""
        return redis_cluster.own_role(self.nodes[index].text("CLUSTER", "NODES", timeout=1.0))

    def master_of(self, index: int) -> int | None:
        """The index of the master node ``index`` replicates, by its own ``CLUSTER NODES``."""
        for line in self.nodes[index].text("CLUSTER", "NODES", timeout=1.0).splitlines():
            fields = line.split()
            if len(fields) >= 4 and "myself" in fields[2].split(",") and fields[3] != "-":
                ids = [self.node_id(i) for i in range(len(self.nodes))]
                return ids.index(fields[3]) if fields[3] in ids else None
        return None

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready():
            if time.monotonic() > deadline:
                states = []
                for node in self.nodes:
                    try:
                        info = redis_cluster.parse_info(node.text("CLUSTER", "INFO", timeout=1.0))
                        states.append(f"{node.port}: {info.get('cluster_state')}, "
                                      f"{info.get('cluster_slots_ok')} slots ok, "
                                      f"{info.get('cluster_known_nodes')} nodes known")
                    except OSError as exc:
                        states.append(f"{node.port}: {exc}")
                raise ServerFailed(f"the Redis Cluster was not ready within {timeout:.0f} s: "
                                   + "; ".join(states))
            time.sleep(0.02)

    def flushall(self) -> None:
        """Every node's keys and cached Lua scripts gone (scripts too: a test of EVALSHA's
        fallback must find them unknown)."""
        for node in self.nodes:
            node.flushall()
            reply = node.command("SCRIPT", "FLUSH")
            if reply != b"+OK":
                raise ServerFailed(f"SCRIPT FLUSH on port {node.port} answered {reply!r}")

    def node_id(self, index: int) -> str:
        """A node's cluster id (kept in its nodes.conf: the same after a restart)."""
        if index not in self._ids:
            self._ids[index] = self.nodes[index].text("CLUSTER", "MYID")
        return self._ids[index]

    def owner(self, slot: int) -> int | None:
        """The index of the node serving ``slot`` if every running node says so, else None."""
        ids = [self.node_id(i) for i in range(len(self.nodes))]
        seen = {slot_owner(node.text("CLUSTER", "NODES"), slot)
                for node in self.nodes if node.running}
        if len(seen) != 1:
            return None
        (owner,) = seen
        return ids.index(owner) if owner in ids else None

    def take_over_slot(self, slot: int, target: int, timeout: float = 10.0) -> None:
        """``slot``, served by a stopped node, given to node ``target`` as a failover would
        (with a newer config epoch, so the old owner gives it up when it is back); returns
        once every running node says so."""
        source = self.owner(slot)
        assert source is not None and not self.nodes[source].running, (slot, source)
        self._ok(target, "CLUSTER", "SETSLOT", str(slot), "IMPORTING", self.node_id(source))
        for index, node in enumerate(self.nodes):
            if node.running:  # the target first: it takes a new epoch as it ends importing
                self._ok(index, "CLUSTER", "SETSLOT", str(slot), "NODE", self.node_id(target))
        self._wait_owner(slot, target, timeout)

    def begin_slot_migration(self, slot: int, target: int) -> None:
        """``slot`` IMPORTING on node ``target``, MIGRATING on its owner (the first step of
        ``redis-cli --cluster reshard``): its owner answers ``-ASK`` for keys it lacks."""
        source = self.owner(slot)
        assert source is not None and source != target, (slot, source, target)
        self._ok(target, "CLUSTER", "SETSLOT", str(slot), "IMPORTING", self.node_id(source))
        self._ok(source, "CLUSTER", "SETSLOT", str(slot), "MIGRATING", self.node_id(target))

    def move_keys(self, slot: int, target: int, keys: Sequence[str]) -> None:
        """MIGRATE ``keys`` (all of ``slot``) from the slot's owner to node ``target``."""
        source = self.owner(slot)
        assert source is not None
        port = str(self.nodes[target].port)
        for key in keys:
            reply = self.nodes[source].command("MIGRATE", "127.0.0.1", port, key, "0", "5000")
            if reply not in (b"+OK", b"+NOKEY"):
                raise ServerFailed(f"MIGRATE {key} answered {reply!r}")

    def end_slot_migration(self, slot: int, target: int, timeout: float = 10.0) -> None:
        """``slot`` assigned to node ``target`` (told to it first, then to the others, as
        Redis documents); returns once every node says so."""
        order = [target] + [i for i in range(len(self.nodes)) if i != target]
        for index in order:
            self._ok(index, "CLUSTER", "SETSLOT", str(slot), "NODE", self.node_id(target))
        self._wait_owner(slot, target, timeout)

    def _wait_owner(self, slot: int, owner: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.owner(slot) != owner:
            if time.monotonic() > deadline:
                raise ServerFailed(f"the nodes do not agree that node {owner} has slot {slot}")
            time.sleep(0.01)

    def migrate_slot(self, slot: int, target: int, keys: Sequence[str] = ()) -> None:
        """Move ``slot`` with its ``keys`` (all of them) to node ``target``."""
        self.begin_slot_migration(slot, target)
        self.move_keys(slot, target, keys)
        self.end_slot_migration(slot, target)

    def reset_slot(self, slot: int, owner: int) -> None:
        """Undo whatever a test did to ``slot``: every node's data flushed (``flushall``),
        any migration of it cancelled (``SETSLOT STABLE``), then served by node ``owner``
        (assigned again if no node served it)."""
        self.flushall()
        for index in range(len(self.nodes)):
            self._ok(index, "CLUSTER", "SETSLOT", str(slot), "STABLE")
        current = self.owner(slot)
        if current is None:  # unassigned (DELSLOTS)
            self._ok(owner, "CLUSTER", "ADDSLOTS", str(slot))
            self._wait_owner(slot, owner, 10.0)
        elif current != owner:
            self.migrate_slot(slot, owner)

    def _ok(self, index: int, *args: str) -> None:
        reply = self.nodes[index].command(*args)
        if reply != b"+OK":
            raise ServerFailed(f"{' '.join(args)} on port {self.nodes[index].port} answered {reply!r}")

    def _create(self, timeout: float) -> None:
        redis_cli = shutil.which("redis-cli")
        if redis_cli is None:
            raise ServerFailed("redis-cli not found: apt-get install redis-tools")
        argv = redis_cluster.create_argv(redis_cli, "127.0.0.1", [n.port for n in self.nodes],
                                         self.replicas)
        try:
            result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                                    stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            raise ServerFailed(f"redis-cli --cluster create took over {timeout:.0f} s") from exc
        if result.returncode != 0:
            raise ServerFailed(f"redis-cli --cluster create failed:\n{result.stdout}{result.stderr}")


def slot_owner(cluster_nodes: str, slot: int) -> str | None:
    """The id of the node serving ``slot`` in a ``CLUSTER NODES`` reply."""
    for line in cluster_nodes.splitlines():
        fields = line.split()
        for entry in fields[8:]:
            if entry.startswith("["):  # a migration in progress, not ownership
                continue
            first, _, last = entry.partition("-")
            if int(first) <= slot <= int(last or first):
                return fields[0]
    return None
