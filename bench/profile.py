"""Where the instances' CPU goes: py-spy samples every given process at once, then the
samples are sorted into the layers of a write's path. Run it while a load runs, e.g.

    .venv/bin/python bench/fanout.py --urls ... --pids 101,102,103 --rates 200 --seconds 30 &
    sleep 10; .venv/bin/python bench/profile.py --pids 101,102,103 --seconds 10

Prints a markdown table (share of the sampled CPU per layer) and keeps the raw collapsed
stacks (``--raw DIR``) for a closer look (e.g. speedscope, or ``grep`` and ``sort``).
Needs py-spy (the ``bench`` extra) and root (ptrace).
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# First match wins: (layer, a frame the stack must contain, frames one of which it must contain).
LAYERS = [
    ("asyncpg (driver, socket writes)", ["_main_loop", "_io_task"], ["asyncpg", "PostgresStore._on_connection"]),
    ("redis-py (publish, subscribe, presence, limits)", ["_main_loop", "_io_task"], ["redis", "_poll", "_online", "_refresh"]),
    ("trio-asyncio's loop (the bridge itself)", ["_main_loop", "_io_task"], []),
    ("websocket frames out (Quart → Hypercorn → socket)", ["SyncSession._emit"], []),
    ("HTTP requests (Quart, our handlers, responses)", ["handle_request", "handle_messages"], []),
    ("Hypercorn connections (reading, parsing)", ["TCPServer", "_run_handler"], []),
    ("broker subscriber (Trio side)", ["RedisBroker.subscribe"], []),
    ("presence upkeep", ["keep_presence"], []),
    ("audit log", ["Audit.run"], []),
    ("other websocket work", ["handle_websocket"], []),
]


PY_SPY = shutil.which("py-spy", path=os.path.dirname(sys.executable)) or "py-spy"


def record(pids: list[int], seconds: float, rate: int, directory: Path) -> list[Path]:
    outputs = [directory / f"{pid}.txt" for pid in pids]
    procs = [
        subprocess.Popen(
            [PY_SPY, "record", "-p", str(pid), "-d", str(round(seconds)),
             "-r", str(rate), "-f", "raw", "-o", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        for pid, out in zip(pids, outputs, strict=True)
    ]
    for proc in procs:
        proc.wait(timeout=seconds + 60)
    return outputs


def layers(paths: list[Path]) -> tuple[int, collections.Counter[str]]:
    """Samples per layer, idle waits (epoll) left out."""
    counts: collections.Counter[str] = collections.Counter()
    total = 0
    for path in paths:
        for line in path.read_text().splitlines():
            stack, _, n = line.rpartition(" ")
            if "get_events" in stack.rsplit(";", 1)[-1]:
                continue  # waiting in epoll: idle
            total += int(n)
            for name, must, any_of in LAYERS:
                if any(m in stack for m in must) and (not any_of or any(a in stack for a in any_of)):
                    counts[name] += int(n)
                    break
            else:
                counts["Trio's scheduler and the rest"] += int(n)
    return total, counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pids", required=True, help="comma-separated instance pids")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=int, default=250, help="samples per second")
    parser.add_argument("--raw", help="keep the collapsed stacks in this directory")
    args = parser.parse_args()
    directory = Path(args.raw or tempfile.mkdtemp(prefix="nursery-profile-"))
    directory.mkdir(parents=True, exist_ok=True)
    paths = record([int(p) for p in args.pids.split(",")], args.seconds, args.rate, directory)
    total, counts = layers([p for p in paths if p.exists()])
    print(f"{total} busy samples over {len(paths)} processes ({os.fspath(directory)})\n")
    print("| layer | share of the instances' CPU |\n|---|---|")
    for name, n in counts.most_common():
        print(f"| {name} | {100 * n / total:.1f} % |")


if __name__ == "__main__":
    main()
