"""The table of ``../shared/peers/compare.sh`` again, from the JSON runs it left in a directory:
for when some runs had to be made again by hand (the Node stack's Redis sometimes cannot bind
its fixed port, 56380, which lies in the ephemeral range and may be a client's port for a
moment; compare.sh then skips that run). Same rule: medians over rounds of p50/p99, all
delivered, capacity = highest rate below the first failing one.

    .venv/bin/python bench/compare_table.py bench/results/2026-12-01/compare-U1000x3-final 100,200,300,400
"""

from __future__ import annotations

import glob
import json
import statistics
import sys


def runs(out: str, side: str, rate: int) -> list[dict]:
    return [json.load(open(p)) for p in sorted(glob.glob(f"{out}/{side}-{rate}-*.json"))]


def median(rows: list[dict], key: str) -> float | None:
    values = [r["latency_ms"][key] for r in rows if r.get("latency_ms")]
    return round(statistics.median(values), 2) if values else None


def delivered(rows: list[dict]) -> bool:
    return bool(rows) and all(
        r.get("events_delivered") == r.get("events_expected") and r.get("writes_failed") == 0
        for r in rows
    )


def main(out: str, rates: list[int]) -> None:
    print(f"fan-out through the proxy, medians of rounds ({out})")
    print("| writes/s | Node p50 / p99 ms | nursery p50 / p99 ms | p99 ratio nursery/Node "
          "| all delivered (Node, nursery) | rounds (Node, nursery) |")
    print("|---|---|---|---|---|---|")
    capacity: dict[str, int | None] = {"node": None, "nursery": None}
    failed: set[str] = set()
    for rate in rates:
        node, ours = runs(out, "node", rate), runs(out, "nursery", rate)
        n99, m99 = median(node, "p99"), median(ours, "p99")
        ratio = f"{m99 / n99:.2f}" if n99 and m99 else "n/a"
        print(f"| {rate} | {median(node, 'p50')} / {n99} | {median(ours, 'p50')} / {m99} | {ratio} "
              f"| {delivered(node)}, {delivered(ours)} | {len(node)}, {len(ours)} |")
        for side, rows, p99 in (("node", node, n99), ("nursery", ours, m99)):
            if side not in failed and p99 is not None and p99 < 50 and delivered(rows):
                capacity[side] = rate
            else:
                failed.add(side)
    print(f"\ncapacity (p99 < 50 ms, all delivered, rates tried {rates}): "
          f"Node {capacity['node']}, nursery {capacity['nursery']}")


if __name__ == "__main__":
    main(sys.argv[1], [int(r) for r in sys.argv[2].split(",")])
