"""Medians over repeated runs: a markdown table per scenario, for bench/README.md.

    .venv/bin/python bench/median.py bench/results/2026-11-26/fanout-100x3-run*.json
    .venv/bin/python bench/median.py bench/results/2026-11-26/connections-18000-run*.json

Each figure is the median of that figure over the runs (so a row's figures may come from
different runs); the capacity is the median of the runs' capacities (``fanout.capacity``).
"""

from __future__ import annotations

import json
import statistics
import sys
from typing import Any

from fanout import capacity


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def fanout_table(runs: list[dict[str, Any]]) -> str:
    rates = sorted({level["rate"] for run in runs for level in run["levels"]})
    lines = [
        "| writes/s | achieved | delivered | p50 ms | p90 ms | p99 ms | max ms "
        "| instances' CPU (cores, sum) | instances' CPU ms / write | generator CPU (cores) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for rate in rates:
        levels = [lv for run in runs for lv in run["levels"] if lv["rate"] == rate]

        def med(get: Any, levels: list[Any] = levels) -> float:
            return _median([get(lv) for lv in levels])

        delivered = min(lv["delivered_ratio"] for lv in levels)
        errors = sum(lv["write_errors"] for lv in levels)
        lines.append(
            f"| {rate:g} | {med(lambda lv: lv['achieved_write_rate']):.1f} "
            f"| {'100 %' if delivered == 1.0 else f'{delivered * 100:.2f} % (worst run)'}"
            f"{f', {errors} write errors' if errors else ''} "
            f"| {med(lambda lv: lv['latency_ms']['p50']):.1f} "
            f"| {med(lambda lv: lv['latency_ms']['p90']):.1f} "
            f"| {med(lambda lv: lv['latency_ms']['p99']):.1f} "
            f"| {med(lambda lv: lv['latency_ms']['max']):.1f} "
            f"| {med(lambda lv: sum(lv.get('server_cpu_share') or [float('nan')])):.2f} "
            f"| {med(lambda lv: lv.get('server_cpu_ms_per_write') or float('nan')):.2f} "
            f"| {med(lambda lv: lv['load_generator_cpu_share']):.2f} |"
        )
    capacities = [capacity(run["levels"]) or 0 for run in runs]
    lines.append("")
    lines.append(
        f"Capacity (p99 < 50 ms, 100 % delivered), median of {len(runs)} runs: "
        f"**{_median(capacities):g} writes/s** (runs: {', '.join(f'{c:g}' for c in capacities)})."
    )
    return "\n".join(lines)


def connections_table(runs: list[dict[str, Any]]) -> str:
    def med(key: str) -> float:
        return _median([run[key] for run in runs if run.get(key) is not None])

    proxy = med("proxy_rss_kib_per_connection")
    via = runs[0].get("via") or []
    via = [via] if isinstance(via, str) else via
    where = f"{runs[0]['target']:,} {'through ' + via[0] if len(via) == 1 else 'direct'}"
    client = "offers deflate" if runs[0].get("offered_deflate") else "no deflate"
    return (
        "| sockets | client | opened (median) | failed (max) | connect s | server RSS KiB / connection "
        "| proxy RSS KiB / connection |\n"
        "|---|---|---|---|---|---|---|\n"
        f"| {where} | {client} | {med('opened'):g} | {max(r['failed'] for r in runs)} "
        f"| {med('connect_seconds'):.1f} | {med('server_rss_kib_per_connection'):.1f} "
        f"| {'-' if proxy != proxy else f'{proxy:.1f}'} |"
    )


def main(paths: list[str]) -> None:
    runs = [json.load(open(path)) for path in paths]
    scenario = runs[0]["scenario"]
    print(fanout_table(runs) if scenario == "fanout" else connections_table(runs))


if __name__ == "__main__":
    main(sys.argv[1:])
