"""pg_auto_failover's unplanned failover time, measured like tests/stores/test_postgres_failover.py.

Per round: a fresh monitor and two data nodes (Debian's pg_autoctl, --auth trust, --no-ssl,
loopback, free ports, the default formation: synchronous replication to the one secondary);
a writer inserts a row every 20 ms on the multi-host URL with target_session_attrs=read-write
(1 s per attempt, a new connection after any error); the primary's pg_autoctl and postgres are
SIGKILLed (the "node lost" case); printed: seconds from the kill to the first acknowledged
write, and acknowledged writes absent afterwards. Runs as root; PostgreSQL runs as `postgres`.

    .venv/bin/python bench/failover_engines.py --rounds 3
    .venv/bin/python bench/failover_engines.py --rounds 3 --tuned detection  # or all
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg

PG_BIN = "/usr/lib/postgresql/15/bin"
AS_POSTGRES = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups"]
WRITE_EVERY = 0.02
ATTEMPT_TIMEOUT = 1.0
FAILOVER_BOUND = 120.0
# pg_autoctl(5) monitor settings, in ms (defaults: 5000, 5000, 2, 2000, 20000, 30000).
# primary_demote_timeout is how long the monitor waits for a lost primary to demote itself
# before promoting: below the keepers' network_partition_timeout (20 s) it trades the
# partition case's safety for speed; here the node is dead, so only the speed shows.
DETECTION = {
    "pgautofailover.health_check_period": "1000",
    "pgautofailover.health_check_timeout": "1000",
    "pgautofailover.health_check_max_retries": "1",
    "pgautofailover.health_check_retry_delay": "500",
    "pgautofailover.node_considered_unhealthy_timeout": "2000",
}
TUNED = {"detection": DETECTION,
         "all": {**DETECTION, "pgautofailover.primary_demote_timeout": "2000"}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """A monitor and two data nodes under one temporary directory, all as `postgres`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = dict(os.environ, PATH=f"{PG_BIN}:/usr/sbin:/usr/bin:/sbin:/bin",
                        XDG_CONFIG_HOME=str(root / "config"), XDG_DATA_HOME=str(root / "data"),
                        XDG_RUNTIME_DIR=str(root / "run"), HOME=str(root))
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.ports: dict[str, int] = {}
        self.monitor_port = free_port()
        self.monitor_uri = (f"postgres://autoctl_node@127.0.0.1:{self.monitor_port}"
                            "/pg_auto_failover?sslmode=disable")

    def autoctl(self, name: str, args: list[str]) -> None:
        with open(self.root / f"{name}.log", "ab") as log:  # the child keeps its own copy
            self.procs[name] = subprocess.Popen(
                [*AS_POSTGRES, "pg_autoctl", *args], env=self.env, cwd=self.root,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def start_monitor(self, settings: dict[str, str]) -> None:
        pgdata = self.root / "monitor"
        subprocess.run(
            [*AS_POSTGRES, "pg_autoctl", "create", "monitor", "--pgdata", str(pgdata),
             "--pgport", str(self.monitor_port), "--hostname", "127.0.0.1", "--auth", "trust",
             "--no-ssl"], env=self.env, cwd=self.root, check=True,
            timeout=60)
        if settings:  # what ALTER SYSTEM would write, before the monitor first runs
            with open(pgdata / "postgresql.auto.conf", "a") as conf:
                conf.writelines(f"{k} = '{v}'\n" for k, v in settings.items())
        self.autoctl("monitor", ["run", "--pgdata", str(pgdata)])

    def start_node(self, name: str) -> None:
        self.ports[name] = free_port()
        self.autoctl(name, ["create", "postgres", "--pgdata", str(self.root / name),
                            "--pgport", str(self.ports[name]), "--hostname", "127.0.0.1",
                            "--auth", "trust", "--no-ssl", "--name", name,
                            "--monitor", self.monitor_uri, "--run"])

    def state(self) -> list[dict[str, object]]:
        out = subprocess.run(
            [*AS_POSTGRES, "pg_autoctl", "show", "state", "--monitor", self.monitor_uri,
             "--json"], env=self.env, cwd=self.root, capture_output=True, timeout=10)
        if out.returncode != 0:
            return []
        try:
            nodes = json.loads(out.stdout)
        except ValueError:
            return []
        return [{**n, "node_name": n["nodename"]} for n in nodes]

    def wait_for(self, want: dict[str, str], bound: float) -> list[dict[str, object]]:
        """Until each named node reports and is assigned the wanted state."""
        deadline = time.monotonic() + bound
        while time.monotonic() < deadline:
            nodes = {str(n["node_name"]): n for n in self.state()}
            if all(name in nodes
                   and nodes[name]["current_group_state"] == s
                   and nodes[name]["assigned_group_state"] == s for name, s in want.items()):
                return list(nodes.values())
            time.sleep(0.5)
        raise TimeoutError(f"not {want} after {bound} s: {self.state()}")

    def kill_node(self, name: str) -> None:
        """SIGKILL the node's pg_autoctl (its whole session) and its postgres, at once."""
        pids = {int((self.root / name / "postmaster.pid").read_text().split()[0])}
        session = self.procs[name].pid
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[3]) == session or int(fields[1]) in pids:  # sid, ppid
                    pids.add(int(stat.parent.name))
        pids.add(session)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def stop(self) -> None:
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        for name in [*self.ports, "monitor"]:  # postgres may have left the session
            pidfile = self.root / name / "postmaster.pid"
            with contextlib.suppress(OSError, ValueError, IndexError, ProcessLookupError):
                os.kill(int(pidfile.read_text().split()[0]), signal.SIGKILL)
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)


@contextlib.contextmanager
def cluster(settings: dict[str, str]) -> Iterator[Cluster]:
    root = Path(tempfile.mkdtemp(prefix="pgaf-", dir="/var/tmp"))
    root.chmod(0o755)
    for sub in ("config", "data", "run"):
        (root / sub).mkdir(mode=0o700)
    shutil.chown(root, "postgres", "postgres")
    for sub in ("config", "data", "run"):
        shutil.chown(root / sub, "postgres", "postgres")
    c = Cluster(root)
    try:
        c.start_monitor(settings)
        c.start_node("node_a")
        c.wait_for({"node_a": "single"}, 90)
        c.start_node("node_b")
        c.wait_for({"node_a": "primary", "node_b": "secondary"}, 120)
        yield c
    finally:
        c.stop()
        if os.environ.get("PGAF_KEEP"):
            print("kept", root)
        else:
            shutil.rmtree(root, ignore_errors=True)


async def one_round(c: Cluster) -> dict[str, object]:
    hosts = ",".join(f"127.0.0.1:{p}" for p in c.ports.values())
    url = f"postgresql://postgres@{hosts}/postgres?target_session_attrs=read-write"
    setup = await asyncpg.connect(url, timeout=5)
    sync_names = await setup.fetchval("SHOW synchronous_standby_names")
    await setup.execute("CREATE TABLE w (n int PRIMARY KEY)")
    await setup.close()
    acked: list[int] = []
    killed_at: float | None = None
    recovered_at: float | None = None
    errors = 0
    n = 0
    conn: asyncpg.Connection | None = None
    start = time.monotonic()
    while recovered_at is None:
        now = time.monotonic()
        if killed_at is None and now - start > 3:
            c.kill_node("node_a")
            killed_at = time.monotonic()
        if killed_at is not None and now - killed_at > FAILOVER_BOUND:
            break
        n += 1
        try:
            if conn is None:
                conn = await asyncpg.connect(url, timeout=ATTEMPT_TIMEOUT)
            await asyncio.wait_for(conn.execute("INSERT INTO w VALUES ($1)", n), ATTEMPT_TIMEOUT)
            acked.append(n)
            if killed_at is not None:
                recovered_at = time.monotonic()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
            errors += 1
            if conn is not None:
                conn.terminate()
                conn = None
        await asyncio.sleep(WRITE_EVERY)
    if conn is not None:
        await conn.close()
    present: set[int] = set()
    if recovered_at is not None:
        check = await asyncpg.connect(url, timeout=5)
        present = {r["n"] for r in await check.fetch("SELECT n FROM w")}
        await check.close()
    return {
        "synchronous_standby_names": sync_names,
        "seconds_to_first_write": None if recovered_at is None or killed_at is None
        else round(recovered_at - killed_at, 2),
        "acked": len(acked),
        "acked_lost": sum(1 for a in acked if a not in present) if present else None,
        "failed_attempts": errors,
        "states_after": [(s["node_name"], s["current_group_state"]) for s in c.state()],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tuned", choices=sorted(TUNED),
                        help="lower the monitor's detection timeouts, or those and the demote wait")
    args = parser.parse_args()
    settings = TUNED[args.tuned] if args.tuned else {}
    results = []
    for i in range(args.rounds):
        with cluster(settings) as c:
            result = asyncio.run(asyncio.wait_for(one_round(c), FAILOVER_BOUND + 60))
        result["round"] = i + 1
        print(json.dumps(result), flush=True)
        results.append(result)
    times = [r["seconds_to_first_write"] for r in results
             if isinstance(r["seconds_to_first_write"], float)]
    print(json.dumps({"settings": settings or "defaults", "rounds": len(results),
                      "seconds_median": statistics.median(times) if times else None,
                      "seconds": times,
                      "acked_lost": [r["acked_lost"] for r in results]}))


if __name__ == "__main__":
    main()
