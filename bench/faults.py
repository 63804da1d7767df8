"""The fault table: a local cluster under a steady load of devices and writers, one fault at a
time, and a soak that watches the instances' memory.

    .venv/bin/python bench/faults.py                       # every fault, then a 10-minute soak
    .venv/bin/python bench/faults.py --cases redis,caddy --soak 0 --json out.json
    .venv/bin/python bench/faults.py --ha --soak 0          # the data tier's failover rows

It starts a PostgreSQL and a Redis of its own (so that it can stop them for as long as a fault
needs: the cluster's supervisor would restart its own at once) and ``nursery cluster up`` (3
instances behind Caddy) on them, in a scratch directory; everything is stopped at the end.

Each fault runs under a fresh load (a new user: ``--devices`` websockets roaming through Caddy
and resuming from their last revision, ``--writers`` clients writing every ``--interval``
seconds and retrying 502/503/504 and connection errors with the same Idempotency-Key, as a
real client does). The faults and the figures are those of ``tests/cluster/faults.py`` and
``tests/cluster/load.py`` (the same code runs as tests): for each, writes attempted /
succeeded / failed / retried, duplicates and lost writes (the server's state read back against
what the writers were told), whether every device's mirror equals the server's state, the
longest time a device went without a change, how long the component was away, and the time
until service was normal again (no write needing a retry or taking over 1 s, no device
without a change for over 1 s).

The soak: ``--soak-users`` users, each with ``--devices`` websockets and ``--soak-writers``
writers (every ``--soak-interval`` s: each user stays under the default write limit of
1,000 a minute), for ``--soak`` seconds after ``--warmup`` seconds, a device dropping its
socket and reconnecting every ``--churn`` seconds; each instance's RSS (``/proc/PID``) before
the load, at the start of the soak (after the warm-up) and at its end.

With ``--ha`` the cluster is ``nursery cluster up --ha`` instead (etcd and 3 PostgreSQL nodes
under Patroni, its own Redis) and the faults are those of ``tests/cluster/ha_faults.py``: a
planned switchover, the primary's node lost, the primary's node hung 30 s; their rows also say
how many nodes were the running primary at once (must be 1).

Black box: HTTP, ``/ws``, the ``nursery cluster`` command and its state file; nothing here
depends on how an instance is built.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import trio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.cluster.faults import FAULTS, Deployment, run_case  # noqa: E402
from tests.cluster.ha_faults import HA_FAULTS, HADeployment  # noqa: E402
from tests.cluster.load import load_through  # noqa: E402
from tests.cluster.support import RunningCluster, start_cluster  # noqa: E402
from tests.servers import PrivatePostgres, RedisServer, scratch_dir  # noqa: E402

COLUMNS = [
    ("fault", "fault"),
    ("writes_attempted", "writes attempted"),
    ("writes_succeeded", "succeeded"),
    ("writes_failed", "failed"),
    ("writes_retried", "retried"),
    ("duplicates", "duplicates"),
    ("lost", "lost"),
    ("devices_converged", "devices converged"),
    ("longest_device_gap_s", "longest device gap (s)"),
    ("fault_s", "component away (s)"),
    ("recovered_s", "service normal after (s)"),
    ("primaries_seen", "primaries at once"),
]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def instance_pids(cluster: RunningCluster) -> dict[str, int]:
    return {p["name"]: p["pid"] for p in cluster.state()["processes"] if p["kind"] == "instance"}


async def soak(deployment: Deployment, args: argparse.Namespace) -> dict[str, Any]:
    cluster = deployment.cluster
    before = {name: rss_kib(pid) for name, pid in instance_pids(cluster).items()}
    rng = random.Random(1)
    async with AsyncExitStack() as stack:
        loads = [await stack.enter_async_context(load_through(
            cluster.proxy_url, devices=args.devices, writers=args.soak_writers,
            interval=args.soak_interval)) for _ in range(args.soak_users)]
        devices = [device for load in loads for device in load.devices]
        print(f"soak: warming up for {args.warmup:g} s", file=sys.stderr, flush=True)
        await trio.sleep(args.warmup)
        pids = instance_pids(cluster)
        start = {name: rss_kib(pid) for name, pid in pids.items()}
        print(f"soak: {args.soak:g} s under load; RSS (KiB) at start {start}", file=sys.stderr, flush=True)
        reconnects = 0
        with trio.move_on_after(args.soak):
            while True:
                await trio.sleep(args.churn)
                device = rng.choice(devices)
                if device.ws is not None:
                    await device.ws.aclose()  # it reconnects through Caddy and resumes
                    reconnects += 1
        end = {name: rss_kib(pid) for name, pid in instance_pids(cluster).items()}
        restarted = sorted(name for name, pid in instance_pids(cluster).items() if pids[name] != pid)
    outcomes = [load.outcome for load in loads if load.outcome is not None]
    assert len(outcomes) == len(loads)
    return {
        "seconds": args.soak,
        "warmup_seconds": args.warmup,
        "users": args.soak_users,
        "devices": len(devices),
        "writers": args.soak_users * args.soak_writers,
        "device_reconnects": reconnects,
        "instances_restarted": restarted,
        "rss_kib": {name: {"before_load": before[name], "start": start[name], "end": end[name],
                           "growth_percent": round(100 * (end[name] - start[name]) / start[name], 2)}
                    for name in start},
        "writes_attempted": sum(o.attempted for o in outcomes),
        "writes_failed": sum(o.failed for o in outcomes),
        "writes_retried": sum(o.retried for o in outcomes),
        "duplicates": sum(o.duplicates for o in outcomes),
        "lost": sum(o.lost for o in outcomes),
        "devices_converged": all(o.converged for o in outcomes),
        "problems": [p for o in outcomes for p in o.problems],
    }


def table(rows: list[dict[str, Any]]) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, bool):
            return "yes" if value else "**no**"
        if isinstance(value, float):
            return f"{value:.2f}"
        return str(value)

    lines = ["| " + " | ".join(title for _, title in COLUMNS) + " |",
             "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(row.get(key, "-")) for key, _ in COLUMNS) + " |" for row in rows]
    return "\n".join(lines)


def soak_table(result: dict[str, Any]) -> str:
    lines = [f"Soak: {result['seconds']:g} s after {result['warmup_seconds']:g} s of warm-up; "
             f"{result['users']} users, {result['devices']} devices ({result['device_reconnects']} "
             f"reconnects), {result['writers']} writers; {result['writes_attempted']} writes, "
             f"{result['writes_failed']} failed, {result['duplicates']} duplicated, {result['lost']} lost; "
             f"devices converged: {'yes' if result['devices_converged'] else 'NO'}; instances "
             f"restarted: {', '.join(result['instances_restarted']) or 'none'}.", "",
             "| instance | RSS before the load (MiB) | at the start (MiB) | at the end (MiB) | growth |",
             "|---|---|---|---|---|"]
    for name, rss in result["rss_kib"].items():
        lines.append(f"| {name} | {rss['before_load'] / 1024:.1f} | {rss['start'] / 1024:.1f} | "
                     f"{rss['end'] / 1024:.1f} | {rss['growth_percent']:+.2f} % |")
    return "\n".join(lines)


async def run(deployment: Deployment | HADeployment, args: argparse.Namespace) -> dict[str, Any]:
    rows = []
    faults: dict[str, Any] = HA_FAULTS if args.ha else FAULTS
    for case in args.cases:
        title, inject = faults[case]
        print(f"fault: {title}", file=sys.stderr, flush=True)
        if isinstance(deployment, HADeployment):
            deployment.primaries_seen = 0
        figures = await run_case(deployment, inject, devices=args.devices,  # type: ignore[arg-type]
                                 writers=args.writers, interval=args.interval)
        if isinstance(deployment, HADeployment) and case.startswith("pg-"):
            figures["primaries_seen"] = deployment.primaries_seen
            figures["clean"] = figures["clean"] and deployment.primaries_seen == 1
        rows.append({"case": case, "fault": title, **figures})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    result: dict[str, Any] = {"load": {"devices": args.devices, "writers": args.writers,
                                       "interval_s": args.interval}, "faults": rows}
    if args.soak > 0 and isinstance(deployment, Deployment):
        result["soak"] = await soak(deployment, args)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default=None,
                        help=f"comma-separated, from {', '.join(FAULTS)}; with --ha from "
                             f"{', '.join(HA_FAULTS)} (default: all)")
    parser.add_argument("--ha", action="store_true",
                        help="cluster up --ha and the data tier's faults (no soak)")
    parser.add_argument("--devices", type=int, default=4, help="websockets of the user (default 4)")
    parser.add_argument("--writers", type=int, default=2, help="writing clients (default 2)")
    parser.add_argument("--interval", type=float, default=0.04,
                        help="seconds between a writer's operations (default 0.04)")
    parser.add_argument("--soak", type=float, default=600, help="soak seconds; 0: none (default 600)")
    parser.add_argument("--soak-users", type=int, default=3, help="users in the soak (default 3)")
    parser.add_argument("--soak-writers", type=int, default=1, help="writers per user in the soak (default 1)")
    parser.add_argument("--soak-interval", type=float, default=0.06,
                        help="seconds between a soak writer's operations (default 0.06)")
    parser.add_argument("--warmup", type=float, default=60, help="load before the soak's start (default 60)")
    parser.add_argument("--churn", type=float, default=5,
                        help="seconds between two device reconnects in the soak (default 5)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    known = HA_FAULTS if args.ha else FAULTS
    args.cases = [c for c in (args.cases or ",".join(known)).split(",") if c]
    unknown = [c for c in args.cases if c not in known]
    if unknown:
        parser.error(f"unknown case(s): {', '.join(unknown)}")

    if args.ha:
        return _main_ha(args)
    scratch = scratch_dir("nursery-faults-")
    postgres = PrivatePostgres(scratch / "postgres")  # fsync on, as in production
    redis = RedisServer(scratch / "redis")
    (scratch / "redis").mkdir()
    cluster: RunningCluster | None = None
    try:
        postgres.start()
        redis.start()
        cluster = start_cluster(scratch / "cluster", NURSERY_DATABASE_URL=postgres.url,
                                NURSERY_REDIS_URL=redis.url)
        result = trio.run(run, Deployment(cluster, postgres, redis), args)
    finally:
        if cluster is not None:
            cluster.stop()
        redis.stop()
        postgres.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    return _report(result, args)


def _main_ha(args: argparse.Namespace) -> int:
    scratch = scratch_dir("nursery-faults-ha-")
    scratch.chmod(0o755)  # as root, PostgreSQL (under Patroni) runs as the postgres user
    cluster: RunningCluster | None = None
    try:
        cluster = start_cluster(scratch / "cluster", extra_args=("--ha",))
        result = trio.run(run, HADeployment(cluster), args)
    finally:
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    return _report(result, args)


def _report(result: dict[str, Any], args: argparse.Namespace) -> int:
    print(table(result["faults"]))
    if "soak" in result:
        print()
        print(soak_table(result["soak"]))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    clean = all(row["clean"] for row in result["faults"]) and (
        "soak" not in result or not result["soak"]["problems"])
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
