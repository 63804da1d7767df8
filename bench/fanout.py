"""Fan-out latency and capacity: U users × D devices connected, R writes/s via REST for S s.

For every change, the latency from the moment its write request was sent to its arrival on
each of the user's devices. Devices are spread over the instances and writes go to a random
instance, so most deliveries cross instances through Redis. Prints JSON.

    # one load level (the issue's first target):
    .venv/bin/python bench/fanout.py --users 100 --devices 3 --rates 200 --seconds 20
    # capacity: a sweep; the highest rate with p99 < 50 ms and 100 % delivered (and every lower one too)
    .venv/bin/python bench/fanout.py --users 1000 --rates 400,600,800,1000,1200 --seconds 15
    # against a running deployment (through Caddy: --urls http://127.0.0.1:8080)
    .venv/bin/python bench/fanout.py --urls http://127.0.0.1:4001,http://127.0.0.1:4002 \\
        --database-url postgresql://... --secret ...

Without ``--urls`` it starts PostgreSQL (fsync on), Redis and 3 instances. Users are seeded
straight into the database (``seed.py``) unless ``--register`` asks for the API.

The load generator must not be the bottleneck: it runs as worker processes
(``fanout_worker.py``) on the lean clients of ``wire.py``: ``--procs`` receivers hold the
devices and time the deliveries, ``--writer-procs`` writers send the writes on an open-loop
schedule. This process only coordinates, and reports per level the CPU of all of them
(``load_generator_cpu_share``, in cores) and of the server instances whose pids it knows.
A write's send time travels in its title (CLOCK_MONOTONIC is system-wide), so no process
needs another's state to compute a latency.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import trio

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wire
from fanout_worker import JsonLines
from local_cluster import local_cluster
from seed import seed_users

P99_TARGET_MS = 50.0
WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fanout_worker.py")
DRAIN_SECONDS = 10.0  # after the last write: how long deliveries may still arrive
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def cpu_times(pid: int) -> tuple[float, float] | None:
    """(user, system) CPU seconds of a process so far (/proc/<pid>/stat), None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS  # fields 14, 15


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU of a process so far, None if it is gone."""
    times = cpu_times(pid)
    return None if times is None else sum(times)


def context_switches(pid: int) -> int | None:
    """Context switches of all the process's threads so far (each a sleep or a preemption;
    a wake-up from epoll or a lock is one)."""
    total = 0
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/status") as status:
                for line in status:
                    if "ctxt_switches:" in line:  # voluntary and nonvoluntary
                        total += int(line.split()[1])
    except (OSError, ValueError):
        return None
    return total


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def growth(after: list[float | None], before: list[float | None]) -> float | None:
    """How much the processes' counters grew in all, None if a process was gone."""
    if None in after or None in before:
        return None
    return sum(a - b for a, b in zip(after, before, strict=True))  # type: ignore[operator]


class Worker:
    """One ``fanout_worker.py`` process and its JSON-lines pipe."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.pid = process.pid
        assert process.stdout is not None and process.stdin is not None
        self.lines = JsonLines(process.stdout, process.stdin)

    async def read(self) -> Any:
        reply = await self.lines.read()
        if reply is None:
            raise RuntimeError(f"load-generator process {self.pid} exited ({self.process.returncode})")
        return reply

    async def ask(self, command: dict[str, Any]) -> Any:
        await self.lines.write(command)
        return await self.read()


async def ask_all(workers: list[Worker], command: dict[str, Any] | None) -> list[Any]:
    """Every worker's answer to ``command`` (or its next line, for None), concurrently."""
    answers: list[Any] = [None] * len(workers)

    async def one(index: int) -> None:
        worker = workers[index]
        answers[index] = await (worker.read() if command is None else worker.ask(command))

    async with trio.open_nursery() as nursery:
        for index in range(len(workers)):
            nursery.start_soon(one, index)
    return answers


@asynccontextmanager
async def start_workers(role: str, setups: list[dict[str, Any]]) -> AsyncIterator[list[Worker]]:
    """One worker process per setup, each sent its setup; stopped (or killed) on exit."""
    workers: list[Worker] = []
    try:
        for setup in setups:
            process = await trio.lowlevel.open_process(
                [sys.executable, WORKER, role], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            workers.append(Worker(process))
            await workers[-1].lines.write(setup)
        yield workers
    finally:
        with trio.CancelScope(shield=True):
            for worker in workers:
                with trio.move_on_after(2):
                    try:
                        await worker.lines.write({"cmd": "stop"})
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        pass
            for worker in workers:
                with trio.move_on_after(5):
                    await worker.process.wait()
                if worker.process.returncode is None:
                    worker.process.kill()
                    await worker.process.wait()


async def register_users(urls: list[str], users: int, devices: int) -> list[list[str]]:
    tokens: list[list[str]] = [[] for _ in range(users)]
    pools = [wire.HTTPPool(url, max_connections=12) for url in urls]
    limiter = trio.CapacityLimiter(12)

    async def post(pool: wire.HTTPPool, path: bytes, body: dict[str, Any]) -> Any:
        data = json.dumps(body).encode()
        head = b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
        status, reply = await pool.request(lambda: head % (path, pool.host_header, len(data)) + data)
        if not 200 <= status < 300:
            raise RuntimeError(f"{path.decode()}: HTTP {status}: {reply[:200]!r}")
        return json.loads(reply)

    async def one(index: int) -> None:
        async with limiter:
            email, password = f"bench-{random.getrandbits(64):x}@example.com", "benchmark password"
            reply = await post(pools[index % len(pools)], b"/api/auth/register",
                               {"email": email, "password": password, "device": "d0"})
            tokens[index].append(reply["token"])
            for d in range(1, devices):
                reply = await post(pools[(index + d) % len(pools)], b"/api/auth/login",
                                   {"email": email, "password": password, "device": f"d{d}"})
                tokens[index].append(reply["token"])

    async with trio.open_nursery() as nursery:
        for index in range(users):
            nursery.start_soon(one, index)
    for pool in pools:
        pool.close()
    return tokens


async def broker_received(urls: list[str]) -> list[float | None]:
    """Each instance's ``nursery_broker_received_total`` (None where /metrics is not served,
    as through the proxy)."""
    counts: list[float | None] = []
    async with httpx.AsyncClient(timeout=10) as client:
        for url in urls:
            r = await client.get(f"{url}/metrics")
            line = next((x for x in r.text.splitlines() if x.startswith("nursery_broker_received_total ")), None)
            counts.append(float(line.split()[1]) if r.status_code == 200 and line else None)
    return counts


async def load_level(writers: list[Worker], receivers: list[Worker], server_pids: list[int],
                     rate: float, seconds: float, level: int, per_write: int, urls: list[str]) -> dict[str, Any]:
    writes = int(rate * seconds)
    workers = writers + receivers
    received_before = await broker_received(urls)
    cpu_before = [cpu_seconds(w.pid) for w in workers] + [own_cpu_seconds()]
    times_before = [cpu_times(pid) for pid in server_pids]
    servers_before = [None if t is None else sum(t) for t in times_before]
    kernel_before = [None if t is None else t[1] for t in times_before]
    switches_before = [context_switches(pid) for pid in server_pids]
    began_ns = time.monotonic_ns()
    start_ns = began_ns + 200_000_000  # the writers' common start, once they all have the command
    results = await ask_all(writers, {"cmd": "level", "level": level, "rate": rate, "writes": writes,
                                      "start_ns": start_ns})
    write_seconds = max(1e-9, (max(r["finished_ns"] for r in results) - start_ns) / 1e9)
    errors: Counter[str] = Counter()
    for result in results:
        errors.update(result["errors"])
    write_errors = sum(errors.values())
    expected = (writes - write_errors) * per_write
    delivered, still_open = 0, None
    with trio.move_on_after(DRAIN_SECONDS):
        while True:
            counts = await ask_all(receivers, {"cmd": "count", "level": level})
            delivered = sum(c["delivered"] for c in counts)
            still_open = sum(c["open"] for c in counts)
            if delivered >= expected:
                break
            await trio.sleep(0.05)
    elapsed = (time.monotonic_ns() - began_ns) / 1e9
    cpu_after = [cpu_seconds(w.pid) for w in workers] + [own_cpu_seconds()]
    times_after = [cpu_times(pid) for pid in server_pids]
    servers_after = [None if t is None else sum(t) for t in times_after]
    kernel_after = [None if t is None else t[1] for t in times_after]
    server_cpu, kernel_cpu = growth(servers_after, servers_before), growth(kernel_after, kernel_before)
    switches_after = [context_switches(pid) for pid in server_pids]
    switches = growth(switches_after, switches_before)
    per_process = [(a - b) / elapsed if a is not None and b is not None else 0.0
                   for a, b in zip(cpu_after, cpu_before, strict=True)]
    cpu = sum(per_process) * elapsed
    received = [a - b if a is not None and b is not None else None
                for a, b in zip(await broker_received(urls), received_before, strict=True)]
    lat_ms = [x for reply in await ask_all(receivers, {"cmd": "collect", "level": level})
              for x in reply["latencies_ms"]]
    return {
        "rate": rate,
        "achieved_write_rate": round(writes / write_seconds, 1),
        "writes": writes,
        "write_errors": write_errors,
        "write_error_kinds": dict(errors),
        "expected_deliveries": writes * per_write,
        "delivered": len(lat_ms),
        "delivered_ratio": round(len(lat_ms) / (writes * per_write), 5) if writes else None,
        "latency_ms": {
            "p50": round(percentile(lat_ms, 0.50), 2),
            "p90": round(percentile(lat_ms, 0.90), 2),
            "p99": round(percentile(lat_ms, 0.99), 2),
            "max": round(max(lat_ms), 2) if lat_ms else None,
            "mean": round(statistics.fmean(lat_ms), 2) if lat_ms else None,
        },
        "devices_connected_at_end": still_open,
        # cores, over the level (writes and the wait for their deliveries): every generator process
        "load_generator_cpu_share": round(cpu / elapsed, 3),
        "load_generator_cpu_share_max_process": round(max(per_process), 3),
        "load_generator_cpu_ms_per_write": round(cpu * 1000 / writes, 4) if writes else None,
        "load_generator_cpu_share_by_role": {
            "writers": round(sum(per_process[:len(writers)]), 3),
            "receivers": round(sum(per_process[len(writers):len(workers)]), 3),
            "coordinator": round(per_process[-1], 3),
        },
        "server_cpu_share": [round((a - b) / elapsed, 3) if a is not None and b is not None else None
                             for a, b in zip(servers_after, servers_before, strict=True)],
        # the instances' CPU (all of them, ms) over the level per write: what a write costs
        "server_cpu_ms_per_write": (
            round(server_cpu * 1000 / writes, 3) if writes and server_cpu is not None else None),
        # the kernel's part of the instances' CPU (system calls, wake-ups), and their threads'
        # context switches per write (each sleep in epoll or on a lock and each wake-up)
        "server_system_cpu_fraction": (
            round(kernel_cpu / server_cpu, 3) if server_cpu and kernel_cpu is not None else None),
        "server_context_switches_per_write": (
            round(switches / writes, 1) if writes and switches is not None else None),
        # broker messages each instance received over the level: per second, and per write
        "broker_received_per_s": [round(n / elapsed, 1) if n is not None else None for n in received],
        "broker_received_per_write": [round(n / writes, 3) if n is not None and writes else None
                                      for n in received],
        "level_seconds": round(elapsed, 2),
        "_latencies_ms": lat_ms,
    }


def plot(levels: list[dict[str, Any]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (dist, vs_load) = plt.subplots(1, 2, figsize=(11, 4))
    for level in levels:
        values = sorted(level["_latencies_ms"])
        if values:
            ys = [i / len(values) for i in range(len(values))]
            dist.plot(values, ys, label=f"{level['rate']:.0f} writes/s")
    dist.set_xscale("log")
    dist.set_xlabel("write → delivery latency (ms)")
    dist.set_ylabel("fraction of deliveries")
    dist.set_title("latency distribution (CDF)")
    dist.legend()
    rates = [level["rate"] for level in levels]
    for key in ("p50", "p99"):
        vs_load.plot(rates, [level["latency_ms"][key] for level in levels], marker="o", label=key)
    vs_load.axhline(P99_TARGET_MS, color="grey", linestyle="--", label="50 ms")
    vs_load.set_xlabel("writes/s")
    vs_load.set_ylabel("latency (ms)")
    vs_load.set_yscale("log")
    vs_load.set_title("latency vs load")
    vs_load.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def capacity(levels: list[dict[str, Any]]) -> float | None:
    """The highest rate that passes (p99 < 50 ms, everything delivered, no write failed)
    with every lower rate passing too: a lucky level above a failed one does not count."""
    best = None
    for level in sorted(levels, key=lambda lv: lv["rate"]):
        if not (level["latency_ms"]["p99"] < P99_TARGET_MS and level["delivered_ratio"] == 1.0
                and not level["write_errors"]):
            break
        best = level["rate"]
    return best


async def main(args: argparse.Namespace) -> dict[str, Any]:
    rates = [float(r) for r in args.rates.split(",")]
    async with AsyncExitStack() as stack:
        if args.urls:
            urls, database_url, secret = args.urls.split(","), args.database_url, args.secret
            server_pids = [int(p) for p in args.pids.split(",")] if args.pids else []
        else:
            cluster = await stack.enter_async_context(local_cluster(
                args.instances, redis_cluster=args.redis_cluster, server_source=args.server_source))
            urls, database_url, secret = cluster.urls, cluster.database_url, cluster.secret
            server_pids = cluster.pids
        setup_started = time.monotonic()
        if args.register or not (database_url and secret):
            tokens = await register_users(urls, args.users, args.devices)
        else:
            tokens = await seed_users(database_url, secret, args.users, args.devices)
        ws_urls = [u.replace("http://", "ws://") + "/ws" for u in (args.ws_urls or ",".join(urls)).split(",")]
        spread = args.spread or args.devices  # a user's devices sit on this many instances
        devices = [((u + d % spread) % len(ws_urls), token) for u, user_tokens in enumerate(tokens)
                   for d, token in enumerate(user_tokens)]
        procs = max(1, min(args.procs, len(devices)))
        receivers = await stack.enter_async_context(start_workers("receiver", [
            {"ws_urls": ws_urls, "devices": devices[i::procs], "parallel": args.parallel} for i in range(procs)
        ]))
        writer_procs = max(1, args.writer_procs)
        writers = await stack.enter_async_context(start_workers("writer", [
            {"urls": urls, "tokens": [user_tokens[0] for user_tokens in tokens], "index": i, "of": writer_procs,
             "in_flight": math.ceil(args.in_flight / writer_procs), "max_connections": args.max_connections}
            for i in range(writer_procs)
        ]))
        opened = await ask_all(receivers, None)
        await ask_all(writers, None)
        connected = sum(r["opened"] for r in opened)
        failed = sum(r["failed"] for r in opened)
        setup_seconds = time.monotonic() - setup_started
        await trio.sleep(1)
        levels = []
        for index, rate in enumerate(rates):
            levels.append(await load_level(writers, receivers, server_pids, rate, args.seconds, index,
                                           args.devices, urls))
    if args.plot:
        try:
            plot(levels, args.plot)
        except ImportError as error:  # the figures are worth more than the picture
            print(f"no plot: {error}", file=sys.stderr)
    for level in levels:
        del level["_latencies_ms"]
    return {
        "scenario": "fanout",
        "users": args.users,
        "devices": args.devices,
        "instances": len(urls),
        "devices_spread_over_instances": min(spread, len(ws_urls)),
        "broker": "redis-cluster" if args.redis_cluster else "redis",
        "seconds_per_level": args.seconds,
        "connections": connected,
        "connections_failed": failed,
        "load_generator_processes": {"receivers": procs, "writers": writer_procs},
        "setup_seconds": round(setup_seconds, 1),
        "levels": levels,
        "capacity_writes_per_s": capacity(levels),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--urls", help="comma-separated base URLs for writes (default: start a local cluster)")
    parser.add_argument("--ws-urls", help="comma-separated base URLs for devices (default: --urls)")
    parser.add_argument("--pids", help="with --urls: the instances' pids, to report their CPU")
    parser.add_argument("--database-url", help="with --urls: seed users straight into this database")
    parser.add_argument("--secret", help="with --urls: the deployment's NURSERY_SECRET_KEY, to sign tokens")
    parser.add_argument("--register", action="store_true", help="register users through the API instead")
    parser.add_argument("--instances", type=int, default=3, help="instances of the local cluster")
    parser.add_argument("--redis-cluster", action="store_true",
                        help="the local cluster's broker on a 3-master Redis Cluster (sharded pub/sub)")
    parser.add_argument("--server-source", type=Path,
                        help="run the local instances from this checkout (say, an older commit's)")
    parser.add_argument("--spread", type=int,
                        help="instances a user's devices sit on (default: as many as it has devices)")
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--devices", type=int, default=3)
    parser.add_argument("--rates", default="200", help="writes/s, comma-separated load levels")
    parser.add_argument("--seconds", type=float, default=20.0, help="duration of each level")
    parser.add_argument("--plot", help="write a PNG: latency CDF per level, p50/p99 vs load")
    parser.add_argument("--procs", type=int, default=2, help="receiver processes (they share the devices)")
    parser.add_argument("--writer-procs", type=int, default=1, help="writer processes (they share the writes)")
    parser.add_argument("--in-flight", type=int, default=256, help="bound on writes in flight (all writers)")
    parser.add_argument("--max-connections", type=int, default=64,
                        help="keep-alive connections per instance per writer process")
    parser.add_argument("--parallel", type=int, default=64, help="websocket handshakes at once per receiver")
    print(json.dumps(trio.run(main, parser.parse_args()), indent=2))
