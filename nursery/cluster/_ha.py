"""``nursery cluster up --ha``'s database: one etcd and ``config.ha_nodes`` PostgreSQL nodes,
each under Patroni (``_patroni``: synchronous_mode, a synchronous standby), as children of the
supervisor; the instances get every node's address with ``target_session_attrs=read-write``.

The supervisor starts etcd, then the nodes (Patroni runs its own PostgreSQL: as the
``postgres`` user when we are root), waits until one node is the leader with a synchronous
standby, and creates the ``nursery`` database on it. Afterwards ``watch_roles`` keeps each
node's role (leader / sync_standby / replica) and replication lag in the state file; a node
that dies is restarted by the supervisor like any child and rejoins as a standby.

Three nodes by default: with ``synchronous_mode_strict`` (``NURSERY_DB_SYNC_STRICT``, the
default) a primary never commits alone, so two nodes would stop taking writes whenever one is
lost; the third keeps a synchronous standby available after a failover.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from nursery.cluster import _etcd, _patroni
from nursery.cluster._child import Child
from nursery.cluster._config import LOG_DIR, ClusterConfig, ClusterError
from nursery.cluster._probes import http_get, json_object
from nursery.stores._pg_host import _ServerUser, find_pg_bin_dir, free_port

log = logging.getLogger("nursery.cluster")

ROLE_POLL = 1.0  # seconds between looks at the nodes' roles
# The instances' NURSERY_DB_TIMEOUT (unless set): an operation's budget must outlast a
# switchover's pause (~5 s: demote, promote, a standby re-attached), which its retries cover.
DB_TIMEOUT = 10.0
DATABASE = "nursery"


def plan(config: ClusterConfig, directory: Path, base_env: dict[str, str],
         taken: set[int]) -> tuple[list[Child], list[_patroni.Node], str]:
    """The etcd and Patroni children, the nodes, and the instances' database URL. A new
    cluster on every ``up`` (new ports, empty data): a data directory left by an earlier run
    would belong to another etcd's cluster."""
    root = directory / "ha"
    shutil.rmtree(root, ignore_errors=True)
    logs = directory / LOG_DIR

    def port() -> int:
        while (p := free_port(config.host)) in taken:
            pass
        taken.add(p)
        return p

    etcd_dir = root / "etcd"
    etcd_dir.mkdir(parents=True)
    client_port, peer_port = port(), port()
    etcd_url = _etcd.etcd_url(config.host, client_port)
    children = [Child("etcd", "etcd",
                      _etcd.etcd_argv(config.etcd, host=config.host, client_port=client_port,
                                      peer_port=peer_port, directory=etcd_dir / "data"),
                      base_env, config.host, client_port, logs / "etcd.log",
                      etcd_probe_of(config.host, client_port))]
    user = _ServerUser.for_root()
    bin_dir = find_pg_bin_dir()
    nodes = []
    env = {k: v for k, v in base_env.items() if not k.startswith("PG")}
    env["LC_MESSAGES"] = "C"
    for i in range(config.ha_nodes):
        node = _patroni.Node(f"pg-{i + 1}", config.host, port(), port(), root / f"pg-{i + 1}")
        _patroni.write_node_config(node, _patroni.node_config(
            node, etcd_url=etcd_url, bin_dir=bin_dir, strict=config.db_sync_strict))
        argv = [config.patroni, str(node.config_path)]
        if user is not None:  # nothing above the cluster's directory changes mode
            user.check_reachable(node.directory, remedy="use a --dir it can reach (e.g. under /var/tmp)")
            user.chown_tree(node.directory)
            argv = [*user.prefix(), *argv]
        child = Child(node.name, "patroni", argv, {**env, "HOME": str(node.directory)},
                      config.host, node.pg_port, logs / f"{node.name}.log",
                      patroni_probe_of(config.host, node.api_port))
        child.info = {"api_port": node.api_port, "role": None, "lag": None}
        children.append(child)
        nodes.append(node)
    return children, nodes, _patroni.database_url(nodes, DATABASE)


def etcd_probe_of(host: str, port: int) -> Callable[[], Any]:
    async def probe() -> str | None:
        answer = await http_get(host, port, "/health")
        ok = answer is not None and answer[0] == 200 and json_object(answer[1]).get("health") == "true"
        return "healthy" if ok else None
    return probe


def patroni_probe_of(host: str, api_port: int) -> Callable[[], Any]:
    """"master running" / "replica running": Patroni's own view of its node, when its
    PostgreSQL runs."""
    async def probe() -> str | None:
        answer = await http_get(host, api_port, "/patroni")
        if answer is None:
            return None
        about = json_object(answer[1])
        if about.get("state") != "running":
            return None
        return f"{about.get('role', '?')} running"
    return probe


async def until_primary(children: list[Child], nodes: list[_patroni.Node], timeout: float) -> str:
    """Wait until a leader with a synchronous standby runs; create the database on it.
    Returns the leader's name. Raises ``ClusterError`` after ``timeout``."""
    deadline = trio.current_time() + timeout
    while True:
        members = await _members(nodes)
        leader = next((m for m in members if m.primary and m.state == "running"), None)
        if leader is not None and any(m.role == "sync_standby" for m in members):
            break
        if trio.current_time() > deadline:
            raise ClusterError(f"no PostgreSQL leader with a synchronous standby within "
                               f"{timeout:.0f} s; see the logs of {', '.join(c.name for c in children)}")
        await trio.sleep(0.2)
    psql = [str(find_pg_bin_dir() / "psql"), "-X", "-A", "-t", "-h", leader.host,
            "-p", str(leader.port), "-U", _patroni.SUPERUSER, "-d", "postgres"]
    exists = await trio.run_process(
        [*psql, "-c", f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'"],
        capture_stdout=True, capture_stderr=True, check=False)
    if exists.stdout.strip() != b"1":
        created = await trio.run_process([*psql, "-c", f"CREATE DATABASE {DATABASE}"],
                                         capture_stdout=True, capture_stderr=True, check=False)
        if created.returncode != 0:
            raise ClusterError(f"cannot create the {DATABASE} database: {created.stderr.decode()}")
    return leader.name


async def until_replicas_linked(redis_nodes: list[Child], timeout: float) -> None:
    """Until every Redis replica streams from its master: one that never did cannot take
    over (Redis cannot tell its data's age). Raises ``ClusterError`` after ``timeout``."""
    deadline = trio.current_time() + timeout
    wanted = len(redis_nodes) // 2
    while True:
        roles = [await redis_role(c.host, c.port) for c in redis_nodes]
        if roles.count("replica") == wanted:
            return
        if trio.current_time() > deadline:
            raise ClusterError(f"the Redis replicas were not linked to their masters within "
                               f"{timeout:.0f} s: {roles}")
        await trio.sleep(0.1)


async def watch_roles(children: list[Child], nodes: list[_patroni.Node],
                      changed: Callable[[], None]) -> None:
    """Keep each PostgreSQL node's role and lag, and each Redis Cluster node's role, in
    ``child.info``; ``changed()`` when they change. Runs until cancelled."""
    by_name = {c.name: c for c in children if c.kind == "patroni"}
    redis_nodes = [c for c in children if c.kind == "redis-node"]
    while True:
        members = {m.name: m for m in await _members(nodes)}
        dirty = False
        for child in redis_nodes:
            role = await redis_role(child.host, child.port)
            if child.info.get("role") != role:
                child.info["role"] = role
                dirty = True
        for name, child in by_name.items():
            member = members.get(name)
            role = member.role if member is not None and member.state in ("running", "streaming") else None
            lag = member.lag if member is not None else None
            if (child.info.get("role"), child.info.get("lag")) != (role, lag):
                child.info.update(role=role, lag=lag)
                dirty = True
        if dirty:
            changed()
        await trio.sleep(ROLE_POLL)


async def redis_role(host: str, port: int) -> str | None:
    """"master", "replica" (streaming from its master) or "replica, link down", by the
    node's ``ROLE``; None when it does not answer."""
    try:
        with trio.fail_after(1.0):
            stream = await trio.open_tcp_stream(host, port)
            async with stream:
                await stream.send_all(b"ROLE\r\n")
                reply = b""
                while reply.count(b"\r\n") < 9 and b"master" not in reply:
                    chunk = await stream.receive_some(512)
                    if not chunk:
                        break
                    reply += chunk
    except (OSError, trio.TooSlowError, trio.BrokenResourceError):
        return None
    if b"\r\nmaster\r\n" in reply:
        return "master"
    if b"\r\nslave\r\n" in reply:
        return "replica" if b"\r\nconnected\r\n" in reply else "replica, link down"
    return None


async def _members(nodes: list[_patroni.Node]) -> list[_patroni.Member]:
    for node in nodes:
        try:
            return await trio.to_thread.run_sync(_patroni.members, node.api_url, 1.0)
        except _patroni.PatroniError:
            continue
    return []


def switchover(state: dict[str, Any], candidate: str | None, timeout: float) -> str:
    """``nursery cluster switchover``: move the primary of the cluster in ``state`` to
    ``candidate`` (default: the synchronous standby), through Patroni's REST API; returns the
    new leader's name once it runs. Blocking. Raises ``ClusterError``."""
    api_urls = [f"http://{p['host']}:{p['api_port']}" for p in state.get("processes", [])
                if p.get("kind") == "patroni" and p.get("api_port")]
    if not api_urls:
        raise ClusterError("this cluster has no Patroni nodes (start it with --ha)")
    members: list[_patroni.Member] = []
    for url in api_urls:
        try:
            members = _patroni.members(url)
            break
        except _patroni.PatroniError:
            continue
    leader = next((m for m in members if m.primary), None)
    if leader is None:
        raise ClusterError("no PostgreSQL leader now: nothing to switch over")
    if candidate is None:
        candidate = next((m.name for m in members if m.role == "sync_standby"), None)
    if candidate is None or candidate == leader.name:
        raise ClusterError("no synchronous standby to hand the primary role to")
    try:
        _patroni.switchover(api_urls[0], leader=leader.name, candidate=candidate, timeout=timeout)
    except _patroni.PatroniError as exc:
        raise ClusterError(str(exc)) from exc
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for url in api_urls:
            try:
                now = _patroni.members(url)
            except _patroni.PatroniError:
                continue
            if any(m.name == candidate and m.primary and m.state == "running" for m in now):
                return candidate
        time.sleep(0.2)
    raise ClusterError(f"{candidate} was not the running primary within {timeout:.0f} s")


def describe(proc: dict[str, Any]) -> str:
    """A node's role for ``status``: "leader", "sync_standby, lag 0 B"..."""
    role = proc.get("role")
    if not role:
        return "-"
    lag = proc.get("lag")
    return role if lag is None else f"{role}, lag {lag} B"

