"""The commands: ``nursery cluster up|down|status|restart`` (``add_cluster_commands`` adds them
to an argparse parser, ``run_cluster_command`` runs a parsed one; exit statuses below).

- ``up``: runs the supervisor in the foreground until SIGTERM/Ctrl-C; ``--detach`` starts it in
  a new session (its output in ``DIR/logs/supervisor.log``) and returns once it is ready.
  Exit 1 when startup fails, with the reason (and the failing process's log tail) on stderr.
- ``status``: reads the state file and probes every process itself (/readyz of each instance,
  /readyz through Caddy, PING to Redis, a startup message to PostgreSQL); exit 0 when all answer,
  2 when something does not (or the supervisor is gone but its children live), 1 when no
  cluster runs in the directory.
- ``restart``: SIGHUP to the supervisor, then follows the state file until the rolling restart
  that started after the request is done (0) or failed (1).
- ``switchover``: (``up --ha``) moves the PostgreSQL primary to the synchronous standby (or
  ``--to NODE``) through Patroni's REST API; 0 once the new primary runs, 1 otherwise.
- ``down``: SIGTERM to the supervisor, waits until it is gone; if the supervisor died without
  stopping its children (kill -9), stops the orphans its state file names.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import trio

from nursery.cluster import _ha
from nursery.cluster._config import (
    DEFAULT_DIR,
    LOG_DIR,
    STATE_FILE,
    ClusterConfig,
    ClusterError,
)
from nursery.cluster._logs import log_tail, redact
from nursery.cluster._probes import (
    postgres_probe_of,
    readyz_probe,
    redis_cluster_probe_of,
    redis_probe_of,
)
from nursery.cluster._run import run_cluster
from nursery.cluster._state import alive, live_pids, read_state, supervisor_running
from nursery.cluster._tls import client_context, trust_instructions
from nursery.cluster._where import ENV_VAR, cluster_dir, not_found_hint, remember
from nursery.errors import NurseryError
from nursery.ports import listen_problem


async def probe_state(state: dict[str, Any]) -> dict[str, str | None]:
    """Each process's probe result, probed concurrently (None: no answer)."""
    results: dict[str, str | None] = {}

    async def one(name: str, probe: Callable[[], Any]) -> None:
        results[name] = await probe()

    def patroni_probe_of(host: str, port: int, proc: dict[str, Any]) -> Callable[[], Any]:
        return _ha.patroni_probe_of(host, int(proc.get("api_port") or 0))

    probes = {"redis": redis_probe_of, "postgres": postgres_probe_of}
    redis_nodes = sum(proc["kind"] == "redis-node" for proc in state.get("processes", []))
    async with trio.open_nursery() as nursery:
        for proc in state.get("processes", []):
            if proc["kind"] == "redis-node":
                probe = redis_cluster_probe_of(proc["host"], proc["port"], redis_nodes)
            elif proc["kind"] == "patroni":
                probe = patroni_probe_of(proc["host"], proc["port"], proc)
            elif proc["kind"] == "etcd":
                probe = _ha.etcd_probe_of(proc["host"], proc["port"])
            else:
                probe = probes.get(proc["kind"], readyz_probe)(proc["host"], proc["port"])
            if proc["kind"] == "caddy" and state.get("tls"):  # at its https:// address
                directory = Path(state["supervisor"]["directory"])
                probe = readyz_probe(str(urlsplit(state["proxy_url"]).hostname), proc["port"],
                                     tls=partial(client_context, directory))
            nursery.start_soon(one, proc["name"], probe)
    return results


def format_status(state: dict[str, Any], probes: dict[str, str | None], running: bool) -> str:
    now = time.time()
    sup = state["supervisor"]
    lines = [f"cluster {sup['directory']}: supervisor "
             + (f"pid {sup['pid']}, {sup['state']}, up {_duration(now - sup['started_at'])}"
                if running else "NOT RUNNING (state file left behind)"),
             f"proxy {state['proxy_url']}   drain delay {state['drain_delay']:g} s, "
             f"Caddy health check every {state['health_interval']:g} s"]
    rows = [("NAME", "PID", "ADDRESS", "STATE", "ROLE", "PROBE", "RESTARTS", "CRASHES", "UPTIME",
             "LOG")]
    database = state.get("database", {})
    if database.get("external"):
        rows.append(("postgres", "-", database.get("url", "?"), "external", "-", "-", "-", "-", "-", "-"))
    if not any(p["kind"] in ("redis", "redis-node") for p in state["processes"]):
        kind = "external cluster" if state.get("redis_cluster") else "external"
        rows.append(("redis", "-", redact(state.get("redis_url", "")), kind, "-", "-", "-", "-", "-", "-"))
    for proc in state["processes"]:
        up = _duration(now - proc["started_at"]) if proc["pid"] and proc["started_at"] else "-"
        rows.append((proc["name"], str(proc["pid"] or "-"), f"{proc['host']}:{proc['port']}",
                     proc["state"], _ha.describe(proc), probes.get(proc["name"]) or "no answer",
                     str(max(0, proc["starts"] - 1)), str(proc["crashes"]), up,
                     _short(proc["log"], sup)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    roll = state.get("roll", {})
    if roll.get("id"):
        took = (f", took {roll['finished_at'] - roll['started_at']:.1f} s"
                if roll.get("finished_at") else f", at {roll.get('current')}")
        lines.append(f"last rolling restart: #{roll['id']} {roll['state']}{took}"
                     + (f": {roll['error']}" if roll.get("error") else ""))
    return "\n".join(lines)


async def _status(directory: Path, as_json: bool, hint: str = "") -> int:
    state = read_state(directory)
    running = supervisor_running(directory)
    if state is None or (not running and not live_pids(state)):
        print(f"no cluster running in {directory}{hint}", file=sys.stderr)
        return 1
    probes = await probe_state(state)
    if as_json:
        print(json.dumps({**state, "running": running, "probes": probes}, indent=2))
    else:
        print(format_status(state, probes, running))
    healthy = running and all(probes.get(p["name"]) for p in state["processes"])
    return 0 if healthy else 2


def _restart(directory: Path, timeout: float, hint: str = "") -> int:
    state = read_state(directory)
    if state is None or not supervisor_running(directory) or state["supervisor"]["state"] != "ready":
        print(f"no ready cluster in {directory}{hint}", file=sys.stderr)
        return 1
    before = state["roll"]["id"]
    if state["roll"].get("state") == "running":
        before += 1  # that one started before we asked: wait for the next
    os.kill(state["supervisor"]["pid"], signal.SIGHUP)
    print(f"rolling restart of {sum(p['kind'] == 'instance' for p in state['processes'])} instances "
          f"(drain delay {state['drain_delay']:g} s each)", flush=True)
    deadline, reported = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        state = read_state(directory) or state
        roll = state["roll"]
        if roll["id"] > before:
            progress = (roll.get("current"), tuple(roll.get("done", [])))
            if progress != reported and roll["state"] == "running" and roll.get("current"):
                reported = progress
                print(f"  restarting {roll['current']}", flush=True)
            if roll["state"] == "done":
                print(f"done: {', '.join(roll['done'])} restarted one at a time in "
                      f"{roll['finished_at'] - roll['started_at']:.1f} s")
                return 0
            if roll["state"] == "failed":
                print(f"rolling restart failed: {roll['error']}", file=sys.stderr)
                return 1
        if not supervisor_running(directory):
            print("the supervisor stopped during the restart", file=sys.stderr)
            return 1
        time.sleep(0.1)
    print(f"the rolling restart did not finish within {timeout:.0f} s", file=sys.stderr)
    return 1


def _down(directory: Path, timeout: float, hint: str = "") -> int:
    state = read_state(directory)
    if supervisor_running(directory) and state is not None:
        os.kill(state["supervisor"]["pid"], signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while supervisor_running(directory):
            if time.monotonic() > deadline:
                print(f"the supervisor (pid {state['supervisor']['pid']}) did not stop within "
                      f"{timeout:.0f} s", file=sys.stderr)
                return 1
            time.sleep(0.1)
        print(f"cluster in {directory} stopped")
        return 0
    orphans = live_pids(state) if state else []
    if not orphans:
        print(f"no cluster running in {directory}{hint}")
        return 0
    # The supervisor died without stopping its children (kill -9): stop them ourselves.
    for name, pid, signum in orphans:
        print(f"stopping orphaned {name} (pid {pid})")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(pid) for _, pid, _ in orphans):
        time.sleep(0.1)
    for _name, pid, _ in orphans:
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    return 0


def _detach(args: argparse.Namespace, directory: Path) -> int:
    """Run ``up`` in a new session in the background; return once it is ready (or failed)."""
    if supervisor_running(directory):
        print(f"a cluster supervisor is already running in {directory}", file=sys.stderr)
        return 1
    argv = [sys.executable, "-m", "nursery.cluster", "up", *_up_flags(args)]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / LOG_DIR).mkdir(exist_ok=True)
    log_path = directory / LOG_DIR / "supervisor.log"
    with contextlib.suppress(FileNotFoundError):
        (directory / STATE_FILE).unlink()
    with open(log_path, "ab") as out:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    deadline = time.monotonic() + args.ready_timeout * 2 + 30
    while time.monotonic() < deadline:
        state = read_state(directory)
        if state and state["supervisor"]["pid"] == process.pid and state["supervisor"]["state"] == "ready":
            print(f"cluster up (supervisor pid {process.pid}); log: {log_path}")
            print(format_status(state, trio.run(probe_state, state), True))
            if args.tls:
                print(trust_instructions(directory, args.proxy_host or args.host, args.proxy_port))
            return 0
        if process.poll() is not None:
            print(f"nursery: cannot start the cluster; {log_path} ends:\n{log_tail(log_path)}",
                  file=sys.stderr)
            return 1
        time.sleep(0.1)
    print(f"the cluster was not ready in time; see {log_path}", file=sys.stderr)
    return 1


def _up_flags(args: argparse.Namespace) -> list[str]:
    flags = ["--dir", str(args.dir), "--instances", str(args.instances),
             "--base-port", str(args.base_port), "--proxy-port", str(args.proxy_port),
             "--host", args.host, "--health-interval", str(args.health_interval),
             "--ready-timeout", str(args.ready_timeout)]
    if args.caddy:
        flags += ["--caddy", args.caddy]
    if args.caddyfile:
        flags += ["--caddyfile", str(args.caddyfile)]
    if args.redis_cluster:
        flags.append("--redis-cluster")
    if args.ha:
        flags.append("--ha")
    if args.tls:
        flags.append("--tls")
    if args.proxy_host:
        flags += ["--proxy-host", args.proxy_host]
    return flags


def add_cluster_commands(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``cluster up|down|status|restart`` to an argparse subparsers object."""
    cluster: argparse.ArgumentParser = subparsers.add_parser(
        "cluster", help="run N instances behind Caddy locally (up|down|status|restart)",
        description="The reference topology on this machine: PostgreSQL and Redis (unless "
                    "NURSERY_DATABASE_URL / NURSERY_REDIS_URL are set), N instances and Caddy, "
                    "supervised; logs and state in --dir.")
    commands = cluster.add_subparsers(dest="cluster_command", required=True)

    def with_dir(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser.add_argument("--dir", type=Path, default=None,
                            help=f"the cluster's state, logs and data (default ${ENV_VAR}; for "
                                 f"status/restart/down then the last `up`'s; then {DEFAULT_DIR})")
        return parser

    up = with_dir(commands.add_parser("up", help="start everything; runs until Ctrl-C/SIGTERM"))
    up.add_argument("--instances", type=int, default=3, help="number of instances (default 3)")
    up.add_argument("--base-port", type=int, default=4001, help="first instance's port (default 4001)")
    up.add_argument("--proxy-port", type=int, default=8080, help="Caddy's port (default 8080)")
    up.add_argument("--host", default="127.0.0.1", help="address everything binds (default 127.0.0.1)")
    up.add_argument("--health-interval", type=float, default=1.0,
                    help="Caddy's active health check period in seconds (default 1); the "
                         "instances drain this plus 1 s (or NURSERY_DRAIN_DELAY)")
    up.add_argument("--caddy", help="the caddy program (default $NURSERY_CADDY or caddy)")
    up.add_argument("--caddyfile", type=Path, help="default: conf/Caddyfile of the checkout")
    up.add_argument("--ready-timeout", type=float, default=60.0,
                    help="seconds each process may take to get ready (default 60)")
    up.add_argument("--redis-cluster", action="store_true", default=None,
                    help="a Redis Cluster of 3 masters instead of one Redis (needs redis-cli); "
                         "with NURSERY_REDIS_URL set: it names a cluster node (also "
                         "NURSERY_REDIS_CLUSTER=true)")
    up.add_argument("--ha", action="store_true", default=None,
                    help="no single point of failure in the data tier: PostgreSQL with "
                         "automatic failover (etcd and 3 nodes under Patroni, a synchronous "
                         "standby; needs the etcd-server and patroni packages) and, unless "
                         "NURSERY_REDIS_URL is set, a Redis Cluster of 3 masters each with a "
                         "replica (needs redis-cli)")
    up.add_argument("--proxy-host",
                    help="the address Caddy alone binds (default: --host); with --tls, 0.0.0.0 "
                         "lets a phone on the network install the app while the instances, Redis "
                         "and PostgreSQL stay on --host")
    up.add_argument("--tls", action="store_true",
                    help="serve HTTPS with Caddy's local CA (no ACME; trust its root on each "
                         "device: `up` prints how)")
    up.add_argument("--detach", action="store_true",
                    help="run the supervisor in the background; return once the cluster is ready")
    with_dir(commands.add_parser("down", help="stop the cluster (instances first)")).add_argument(
        "--timeout", type=float, default=90.0, help="seconds to wait (default 90)")
    status = with_dir(commands.add_parser(
        "status", help="a table of every process, probed now; exit 0 if all are ready"))
    status.add_argument("--json", action="store_true", help="the state file and probes as JSON")
    with_dir(commands.add_parser(
        "restart", help="rolling restart: one instance at a time, each back in Caddy before the next"
    )).add_argument("--timeout", type=float, default=600.0, help="seconds to wait (default 600)")
    switch = with_dir(commands.add_parser(
        "switchover", help="(--ha) move the PostgreSQL primary to its synchronous standby"))
    switch.add_argument("--to", help="the node to promote (default: the synchronous standby)")
    switch.add_argument("--timeout", type=float, default=60.0, help="seconds to wait (default 60)")
    return cluster


def run_cluster_command(args: argparse.Namespace) -> int:
    """Run a parsed ``cluster`` command; returns the exit status."""
    command = args.cluster_command
    directory, origin = cluster_dir(args.dir, for_up=command == "up")
    args.dir, hint = directory, not_found_hint(origin)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=os.environ.get("NURSERY_LOG_LEVEL", "INFO").upper(),
                            format="%(asctime)s cluster %(levelname)s: %(message)s")
    if command == "status":
        return trio.run(_status, directory, args.json, hint)
    if command == "restart":
        return _restart(directory, args.timeout, hint)
    if command == "down":
        return _down(directory, args.timeout, hint)
    if command == "switchover":
        return _switchover(directory, args.to, args.timeout, hint)
    remember(directory)
    if args.detach:
        return _detach(args, directory)
    try:
        config = ClusterConfig.from_env(
            directory=directory, instances=args.instances, base_port=args.base_port,
            proxy_port=args.proxy_port, host=args.host, health_interval=args.health_interval,
            caddy=args.caddy, caddyfile=args.caddyfile, ready_timeout=args.ready_timeout,
            redis_cluster=args.redis_cluster, ha=args.ha, tls=args.tls,
            proxy_host=args.proxy_host)
        _check_config(config)
        trio.run(run_cluster, config)
    except BaseException as exc:
        reason = _expected_failure(exc)
        if reason is None:
            raise
        print(f"nursery: cannot run the cluster: {reason}", file=sys.stderr)
        return 1
    return 0


def _check_config(config: ClusterConfig) -> None:
    if config.instances < 1:
        raise ClusterError("--instances must be at least 1")
    if config.effective_drain_delay <= config.health_interval:
        raise ClusterError(f"the drain delay ({config.effective_drain_delay:g} s) must be longer "
                           f"than Caddy's health check interval ({config.health_interval:g} s), "
                           f"or requests reach instances whose listener has closed")
    programs = {config.caddy: "caddy"}
    if not config.redis_url:
        programs[config.redis_server] = "redis-server"
        if config.uses_redis_cluster:
            programs[config.redis_cli] = "redis-tools"
    if config.ha and not config.database_url:
        programs[config.etcd] = "etcd-server"
        programs[config.patroni] = "patroni"
    for program, package in programs.items():
        if shutil.which(program) is None:
            raise ClusterError(f"{program} not found: install Debian's {package} package"
                               + (" or set NURSERY_CADDY" if package == "caddy" else ""))
    busy = [p for p in config.instance_ports if listen_problem(config.host, p)]
    busy += [config.proxy_port] if listen_problem(config.proxy_bind, config.proxy_port) else []
    if busy:
        raise ClusterError(f"port(s) {', '.join(map(str, busy))} on {config.host} already in use "
                           f"(another cluster? see --base-port and --proxy-port)")


def _switchover(directory: Path, candidate: str | None, timeout: float, hint: str = "") -> int:
    state = read_state(directory)
    if state is None or not supervisor_running(directory):
        print(f"no cluster running in {directory}{hint}", file=sys.stderr)
        return 1
    began = time.monotonic()
    try:
        leader = _ha.switchover(state, candidate, timeout)
    except ClusterError as exc:
        print(f"nursery: switchover failed: {exc.message}", file=sys.stderr)
        return 1
    print(f"{leader} is the primary now (switchover took {time.monotonic() - began:.1f} s)")
    return 0


def _expected_failure(exc: BaseException) -> str | None:
    if isinstance(exc, NurseryError):
        return getattr(exc, "message", None) or str(exc)
    if isinstance(exc, SystemExit) and isinstance(exc.code, str):
        return exc.code.removeprefix("nursery: ")
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            reason = _expected_failure(inner)
            if reason is not None:
                return reason
    return None


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _short(path: str, supervisor: dict[str, Any]) -> str:
    with contextlib.suppress(ValueError):
        return str(Path(path).relative_to(supervisor["directory"]))
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m nursery.cluster ...``: the same commands as ``nursery cluster ...``."""
    parser = argparse.ArgumentParser(prog="nursery")
    add_cluster_commands(parser.add_subparsers(dest="command", required=True))
    return run_cluster_command(parser.parse_args(["cluster", *(sys.argv[1:] if argv is None else argv)]))

