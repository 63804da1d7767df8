"""Scale-out: what each instance hears from the broker as instances are added.

Runs ``fanout.py`` on local clusters of K instances (K = 3 and 9 by default), 100 users per
instance, each user's devices on one instance (``--spread 1``: a user's phone and laptop
usually reach the same instance; what matters is that they sit on few), writes at each rate
to random instances; for each broker variant:

    before         one channel for every event (the server code of ``--before``, a checkout
                   of an earlier commit): every instance receives every write
    redis          a channel per user on one Redis: an instance subscribes to its users only
    redis-cluster  the same on a 3-master Redis Cluster (SSUBSCRIBE / SPUBLISH)

and reports broker messages received per instance per second against writes per second,
with the fan-out latency, delivery and the servers' CPU. Writes JSON (all figures) and
prints a Markdown table.

    git worktree add /tmp/nursery-before 823071f   # the last commit with one channel
    .venv/bin/python bench/scaleout.py --before /tmp/nursery-before \\
        --out bench/results/$(date +%F)/scaleout.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

FANOUT = Path(__file__).with_name("fanout.py")


def run_fanout(instances: int, variant: str, args: argparse.Namespace) -> dict[str, Any]:
    command = [sys.executable, str(FANOUT), "--instances", str(instances),
               "--users", str(args.users_per_instance * instances), "--devices", str(args.devices),
               "--spread", "1", "--rates", args.rates, "--seconds", str(args.seconds)]
    if variant == "before":
        command += ["--server-source", str(args.before)]
    elif variant == "redis-cluster":
        command += ["--redis-cluster"]
    print(f"K={instances} {variant}: {' '.join(command[1:])}", file=sys.stderr, flush=True)
    out = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out)


def rows(instances: int, variant: str, result: dict[str, Any]) -> list[dict[str, Any]]:
    table = []
    for level in result["levels"]:
        per_s = [x for x in level["broker_received_per_s"] if x is not None]
        per_write = [x for x in level["broker_received_per_write"] if x is not None]
        table.append({
            "instances": instances,
            "broker": variant,
            "writes_per_s": level["achieved_write_rate"],
            "received_per_instance_per_s_mean": round(statistics.fmean(per_s), 1),
            "received_per_instance_per_s_max": max(per_s),
            "received_per_instance_per_write": round(statistics.fmean(per_write), 3),
            "server_cpu_cores": round(sum(x for x in level["server_cpu_share"] if x is not None), 3),
            "p50_ms": level["latency_ms"]["p50"],
            "p99_ms": level["latency_ms"]["p99"],
            "delivered_ratio": level["delivered_ratio"],
        })
    return table


def markdown(table: list[dict[str, Any]]) -> str:
    lines = ["| K | broker | writes/s | received/instance/s (mean, max) | per write | servers' CPU (cores) "
             "| p50 ms | p99 ms | delivered |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in table:
        lines.append(
            f"| {r['instances']} | {r['broker']} | {r['writes_per_s']:.0f} | "
            f"{r['received_per_instance_per_s_mean']:.0f}, {r['received_per_instance_per_s_max']:.0f} | "
            f"{r['received_per_instance_per_write']:.2f} | {r['server_cpu_cores']:.2f} | {r['p50_ms']} | "
            f"{r['p99_ms']} | {r['delivered_ratio']:.4f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, help="a checkout of the one-channel broker (omit to skip it)")
    parser.add_argument("--instances", default="3,9")
    parser.add_argument("--variants", default="before,redis,redis-cluster")
    parser.add_argument("--users-per-instance", type=int, default=100)
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--rates", default="100,200")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--out", type=Path, help="write every figure here (JSON)")
    args = parser.parse_args()
    variants = [v for v in args.variants.split(",") if v != "before" or args.before]
    results, table = [], []
    for instances in map(int, args.instances.split(",")):
        for variant in variants:
            result = run_fanout(instances, variant, args)
            results.append({"instances": instances, "broker": variant, "fanout": result})
            table += rows(instances, variant, result)
    if args.out:
        os.makedirs(args.out.parent, exist_ok=True)
        args.out.write_text(json.dumps({"table": table, "runs": results}, indent=2) + "\n")
    print(markdown(table))


if __name__ == "__main__":
    main()
