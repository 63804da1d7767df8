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
import time
from pathlib import Path

# First match wins: (layer, frames one of which the stack must contain, frames one of which it
# must also contain). Frames are matched as py-spy prints them: "function (path:line)".
LAYERS = [
    ("asyncpg on the asyncio thread (driver, its loop, socket I/O)", ["_serve (nursery/stores/asyncio_thread.py"], []),
    ("handing operations to the asyncio thread (Trio side)", ["run (nursery/stores/asyncio_thread.py"], []),
    ("broker deliveries to websocket frames (hub, feed, frames)", ["deliver (nursery/service/hub.py"], []),
    ("Redis subscriber (reading, decoding)", ["nursery/redis/subscription.py"], []),
    ("Redis commands (publish, presence, limits)", ["nursery/redis/resp.py"], []),
    ("REST handlers and services (todos, auth)", ["nursery/edge/listener.py"], ["nursery/api/", "nursery/service/"]),
    ("Quart app (GraphQL, web page, health, metrics)", ["nursery/edge/asgi.py"], []),
    ("HTTP on the edge (reading, parsing, answering, logging)", ["nursery/edge/http.py", "nursery/edge/listener.py"], []),
    ("websocket sessions (handshake, hello, catch-up)", ["nursery/service/session.py", "nursery/edge/websocket.py"], []),
    ("presence upkeep", ["keep_presence"], []),
    ("audit log", ["nursery/service/audit.py"], []),
    ("log lines", ["nursery/logs.py"], []),
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
            leaf = stack.rsplit(";", 1)[-1]
            if "get_events" in leaf or leaf.startswith("_serve ("):
                # waiting in epoll (Trio), or inside uvloop's C loop (the asyncio thread), where
                # py-spy cannot tell a wait from work: ``thread_cpu`` measures that thread
                continue
            total += int(n)
            for name, one_of, and_one_of in LAYERS:
                if any(m in stack for m in one_of) and (not and_one_of or any(a in stack for a in and_one_of)):
                    counts[name] += int(n)
                    break
            else:
                counts["Trio's scheduler and the rest"] += int(n)
    return total, counts


def thread_cpu(pids: list[int]) -> dict[str, float]:
    """CPU seconds so far: the instances' main (Trio) threads, and all their other threads
    (the asyncio thread, mostly)."""
    ticks = os.sysconf("SC_CLK_TCK")
    totals = {"Trio thread": 0.0, "other threads (the asyncio thread)": 0.0}
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").iterdir():
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            seconds = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
            totals["Trio thread" if int(task.name) == pid else "other threads (the asyncio thread)"] += seconds
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pids", required=True, help="comma-separated instance pids")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=int, default=250, help="samples per second")
    parser.add_argument("--raw", help="keep the collapsed stacks in this directory")
    args = parser.parse_args()
    directory = Path(args.raw or tempfile.mkdtemp(prefix="nursery-profile-"))
    directory.mkdir(parents=True, exist_ok=True)
    pids = [int(p) for p in args.pids.split(",")]
    before, started = thread_cpu(pids), time.monotonic()
    paths = record(pids, args.seconds, args.rate, directory)
    after, elapsed = thread_cpu(pids), time.monotonic() - started
    total, counts = layers([p for p in paths if p.exists()])
    print(f"{total} busy samples over {len(paths)} processes ({os.fspath(directory)})\n")
    print("| thread | cores (all instances) |\n|---|---|")
    for name in before:
        print(f"| {name} | {(after[name] - before[name]) / elapsed:.3f} |")
    print()
    print("| layer | share of the instances' CPU |\n|---|---|")
    for name, n in counts.most_common():
        print(f"| {name} | {100 * n / total:.1f} % |")


if __name__ == "__main__":
    main()
