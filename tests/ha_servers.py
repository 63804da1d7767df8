"""PostgreSQL with automatic failover for the test suite: one etcd and three Patroni nodes
(``nursery.cluster._patroni``: synchronous_mode on), on free ports in a scratch directory,
started and stopped synchronously like tests/servers.py's servers.

The faults a test applies are the machine's: ``kill_node`` SIGKILLs a node's Patroni and its
PostgreSQL (every process of the node: the postmaster and its backends); ``freeze_node`` /
``thaw_node`` SIGSTOP / SIGCONT them all (a hung machine: its sockets stay open and silent).
``start_node`` starts a killed node's Patroni again (it rejoins as a standby).

Whoever calls ``start()`` calls ``stop()``. Every wait is bounded.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from nursery.cluster import _etcd, _patroni
from nursery.stores._pg_host import _ServerUser, find_pg_bin_dir
from tests.servers import ServerFailed, free_port

LOG_TAIL_LINES = 30


class PatroniCluster:
    """etcd + ``nodes`` Patroni nodes in ``directory``; ``url``: the multi-host URL of the
    ``nursery`` database (``target_session_attrs=read-write``)."""

    def __init__(self, directory: Path, *, nodes: int = 3, strict: bool = True) -> None:
        self.directory = directory
        self.strict = strict
        self.etcd_port, self.etcd_peer_port = free_port(), free_port()
        self.nodes = [_patroni.Node(f"pg-{i + 1}", "127.0.0.1", free_port(), free_port(),
                                    directory / f"pg-{i + 1}") for i in range(nodes)]
        self.url = _patroni.database_url(self.nodes, "nursery")
        self._etcd: subprocess.Popen[bytes] | None = None
        self._patroni: dict[str, subprocess.Popen[bytes]] = {}
        self._user = _ServerUser.for_root()

    # -- lifecycle ------------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        bin_dir = find_pg_bin_dir()
        etcd_dir = self.directory / "etcd"
        etcd_dir.mkdir(parents=True)
        self._etcd = _spawn(_etcd.etcd_argv("etcd", host="127.0.0.1", client_port=self.etcd_port,
                                            peer_port=self.etcd_peer_port, directory=etcd_dir / "data"),
                            etcd_dir / "etcd.log")
        for node in self.nodes:
            config = _patroni.node_config(node, etcd_url=_etcd.etcd_url("127.0.0.1", self.etcd_port),
                                          bin_dir=bin_dir, strict=self.strict)
            _patroni.write_node_config(node, config)
            if self._user is not None:  # ``directory`` must be searchable (0755)
                self._user.check_reachable(node.directory, remedy="chmod 0755 the test's directory")
                self._user.chown_tree(node.directory)
        for node in self.nodes:
            self.start_node(node.name)
        self.wait_for(self._healthy, deadline - time.monotonic(), "a leader and a sync standby")
        self.psql("CREATE DATABASE nursery")
        return self.url

    def stop(self) -> None:
        for name in list(self._patroni):
            process = self._patroni.pop(name)
            self._signal_node(name, signal.SIGCONT)  # a frozen node cannot stop
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(20)
                except subprocess.TimeoutExpired:
                    self.kill_node(name)
        for node in self.nodes:  # a postmaster left behind by a killed Patroni
            pid = _postmaster_pid(node)
            if pid is not None:
                kill_tree(pid, signal.SIGKILL)
        if self._etcd is not None and self._etcd.poll() is None:
            self._etcd.terminate()
            self._etcd.wait(10)

    def __enter__(self) -> PatroniCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what a test reads ----------------------------------------------------------------

    def members(self) -> list[_patroni.Member]:
        """The cluster as the first answering node sees it ([] if none answers)."""
        for node in self.nodes:
            if self._patroni.get(node.name) is None:
                continue
            try:
                return _patroni.members(node.api_url, timeout=1.0)
            except _patroni.PatroniError:
                continue
        return []

    def leader(self) -> str | None:
        return next((m.name for m in self.members() if m.primary and m.state == "running"), None)

    def node(self, name: str) -> _patroni.Node:
        return next(n for n in self.nodes if n.name == name)

    def node_url(self, name: str, database: str = "nursery") -> str:
        node = self.node(name)
        return f"postgresql://{_patroni.SUPERUSER}@{node.host}:{node.pg_port}/{database}"

    def _healthy(self) -> bool:
        """Every node up, one leader, a synchronous standby, the others replicas."""
        running = [m for m in self.members() if m.state in ("running", "streaming")]
        roles = sorted(m.role for m in running)
        return (len(running) == len(self.nodes) and roles.count("leader") == 1
                and roles.count("sync_standby") >= 1)

    def wait_for(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise ServerFailed(f"no {what} within {timeout:.0f} s; members: {self.members()}\n"
                                   + self.log_tails())
            time.sleep(0.1)

    def psql(self, sql: str, *, node: str | None = None) -> str:
        """Run ``sql`` on ``node`` (default: the leader) as the superuser."""
        name = node or self.leader()
        if name is None:
            raise ServerFailed("no leader to run SQL on")
        target = self.node(name)
        result = subprocess.run(
            [str(find_pg_bin_dir() / "psql"), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1",
             "-h", target.host, "-p", str(target.pg_port), "-U", _patroni.SUPERUSER,
             "-d", "postgres", "-c", sql],
            capture_output=True, text=True, timeout=15, check=False)
        if result.returncode != 0:
            raise ServerFailed(f"psql on {name}: {result.stderr.strip()}")
        return result.stdout.strip()

    def log_tails(self) -> str:
        out = []
        for path in sorted(self.directory.glob("*/*.log")):
            lines = path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
            out.append(f"--- {path}\n" + "\n".join(lines))
        return "\n".join(out)

    # -- faults ---------------------------------------------------------------------------

    def start_node(self, name: str) -> None:
        node = self.node(name)
        argv = ["patroni", str(node.config_path)]
        if self._user is not None:
            argv = [*self._user.prefix(), *argv]
        self._patroni[name] = _spawn(argv, node.directory / "patroni.log",
                                     env={"PATH": os.environ.get("PATH", ""), "LC_MESSAGES": "C",
                                          "HOME": str(node.directory)})

    def kill_node(self, name: str) -> None:
        """SIGKILL the node's Patroni and every PostgreSQL process of it, as a lost machine."""
        self._signal_node(name, signal.SIGKILL)
        process = self._patroni.get(name)
        if process is not None:
            process.wait(5)

    def freeze_node(self, name: str) -> None:
        self._signal_node(name, signal.SIGSTOP)

    def thaw_node(self, name: str) -> None:
        self._signal_node(name, signal.SIGCONT)

    def _signal_node(self, name: str, signum: int) -> None:
        process = self._patroni.get(name)
        postmaster = _postmaster_pid(self.node(name))
        if process is not None and process.poll() is None:
            kill_tree(process.pid, signum)
        if postmaster is not None:
            kill_tree(postmaster, signum)


def _spawn(argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    try:
        with open(log_path, "ab") as log_file:
            return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_file,
                                    stderr=subprocess.STDOUT, start_new_session=True, env=env)
    except OSError as exc:
        raise ServerFailed(f"cannot run {argv[0]}: {exc}") from exc


def _postmaster_pid(node: _patroni.Node) -> int | None:
    try:
        pid = int((node.data_dir / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    try:
        os.kill(pid, 0)
    except OSError:
        return None
    return pid


def kill_tree(pid: int, signum: int) -> None:
    """Signal ``pid`` and its descendants (children first listed, all signalled)."""
    for target in [pid, *_descendants(pid)]:
        try:
            os.kill(target, signum)
        except ProcessLookupError:
            pass


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def remove(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)
