"""Fan-out latency and capacity: U users × D devices connected, R writes/s via REST for S s.

For every change, the latency from the moment its write request was sent to its arrival on
each of the user's devices. Devices are spread over the instances and writes go to a random
instance, so most deliveries cross instances through Redis. Prints JSON.

    # one load level (the issue's first target):
    .venv/bin/python bench/fanout.py --users 100 --devices 3 --rates 200 --seconds 20
    # capacity: a sweep; the highest rate with p99 < 50 ms and 100 % delivered wins
    .venv/bin/python bench/fanout.py --users 1000 --rates 400,600,800,1000,1200 --seconds 15
    # against a running deployment (through Caddy: --urls http://127.0.0.1:8080)
    .venv/bin/python bench/fanout.py --urls http://127.0.0.1:4001,http://127.0.0.1:4002 \\
        --database-url postgresql://... --secret ...

Without ``--urls`` it starts PostgreSQL (fsync on), Redis and 3 instances. Users are seeded
straight into the database (``seed.py``) unless ``--register`` asks for the API.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import sys
import time
from contextlib import AsyncExitStack
from typing import Any

import httpx
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

sys.path.insert(0, os.path.dirname(__file__))
from local_cluster import local_cluster  # noqa: E402
from seed import seed_users  # noqa: E402

P99_TARGET_MS = 50.0


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Run:
    """What one load level measured."""

    def __init__(self) -> None:
        self.sent_at: dict[str, float] = {}  # todo title → monotonic send time
        self.latencies: list[float] = []
        self.write_errors = 0


class Devices:
    def __init__(self) -> None:
        self.run = Run()
        self.connected = 0

    async def device(self, ws_url: str, token: str, *, task_status: Any) -> None:
        async with open_websocket_url(ws_url, max_message_size=2**20) as ws:
            await ws.send_message(json.dumps({"type": "hello", "token": token, "since": None}))
            await ws.get_message()  # welcome
            self.connected += 1
            task_status.started()
            try:
                while True:
                    frame = json.loads(await ws.get_message())
                    if frame["type"] == "change" and frame["op"] == "upsert":
                        sent = self.run.sent_at.get(frame["todo"]["title"])
                        if sent is not None:
                            self.run.latencies.append(time.monotonic() - sent)
                    elif frame["type"] == "ping":
                        await ws.send_message('{"type":"pong"}')
            except ConnectionClosed:
                pass


async def register_users(client: httpx.AsyncClient, urls: list[str], users: int, devices: int) -> list[list[str]]:
    tokens: list[list[str]] = [[] for _ in range(users)]
    limiter = trio.CapacityLimiter(12)

    async def one(index: int) -> None:
        async with limiter:
            email, password = f"bench-{random.getrandbits(64):x}@example.com", "benchmark password"
            r = await client.post(f"{urls[index % len(urls)]}/api/auth/register",
                                  json={"email": email, "password": password, "device": "d0"})
            r.raise_for_status()
            tokens[index].append(r.json()["token"])
            for d in range(1, devices):
                r = await client.post(f"{urls[(index + d) % len(urls)]}/api/auth/login",
                                      json={"email": email, "password": password, "device": f"d{d}"})
                r.raise_for_status()
                tokens[index].append(r.json()["token"])

    async with trio.open_nursery() as nursery:
        for index in range(users):
            nursery.start_soon(one, index)
    return tokens


async def load_level(client: httpx.AsyncClient, urls: list[str], tokens: list[list[str]], devices: Devices,
                     rate: float, seconds: float, level: int) -> dict[str, Any]:
    run = devices.run = Run()
    writes = int(rate * seconds)
    in_flight = trio.CapacityLimiter(256)
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)

    async def write(index: int) -> None:
        title = f"L{level}-{index}"
        headers = {"Authorization": f"Bearer {random.choice(tokens)[0]}"}
        async with in_flight:
            run.sent_at[title] = time.monotonic()
            try:
                r = await client.post(f"{random.choice(urls)}/api/todos", json={"title": title}, headers=headers)
                if r.status_code != 201:
                    run.write_errors += 1
            except httpx.HTTPError:
                run.write_errors += 1

    started = time.monotonic()
    async with trio.open_nursery() as writers:
        for index in range(writes):
            delay = started + index / rate - time.monotonic()
            if delay > 0:
                await trio.sleep(delay)
            writers.start_soon(write, index)
    write_seconds = time.monotonic() - started
    per_write = len(tokens[0])
    expected = (writes - run.write_errors) * per_write
    with trio.move_on_after(10):
        while len(run.latencies) < expected:
            await trio.sleep(0.05)
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu_after.ru_utime + cpu_after.ru_stime) - (cpu_before.ru_utime + cpu_before.ru_stime)
    lat_ms = [x * 1000 for x in run.latencies]
    delivered = len(lat_ms)
    return {
        "rate": rate,
        "achieved_write_rate": round(writes / write_seconds, 1),
        "writes": writes,
        "write_errors": run.write_errors,
        "expected_deliveries": writes * per_write,
        "delivered": delivered,
        "delivered_ratio": round(delivered / (writes * per_write), 5) if writes else None,
        "latency_ms": {
            "p50": round(percentile(lat_ms, 0.50), 2),
            "p90": round(percentile(lat_ms, 0.90), 2),
            "p99": round(percentile(lat_ms, 0.99), 2),
            "max": round(max(lat_ms), 2) if lat_ms else None,
            "mean": round(statistics.fmean(lat_ms), 2) if lat_ms else None,
        },
        "load_generator_cpu_share": round(cpu / write_seconds, 2),
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


async def main(args: argparse.Namespace) -> dict[str, Any]:
    rates = [float(r) for r in args.rates.split(",")]
    async with AsyncExitStack() as stack:
        if args.urls:
            urls, database_url, secret = args.urls.split(","), args.database_url, args.secret
        else:
            cluster = await stack.enter_async_context(local_cluster(3))
            urls, database_url, secret = cluster.urls, cluster.database_url, cluster.secret
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
        client = await stack.enter_async_context(httpx.AsyncClient(limits=limits, timeout=30))
        setup_started = time.monotonic()
        if args.register or not (database_url and secret):
            tokens = await register_users(client, urls, args.users, args.devices)
        else:
            tokens = await seed_users(database_url, secret, args.users, args.devices)
        devices = Devices()
        levels = []
        async with trio.open_nursery() as nursery:
            ws_urls = [(args.ws_urls or args.urls or ",".join(urls)).split(",")][0]
            ws_urls = [u.replace("http://", "ws://").replace("https://", "wss://") + "/ws" for u in ws_urls]
            for u, user_tokens in enumerate(tokens):
                for d, token in enumerate(user_tokens):
                    await nursery.start(devices.device, ws_urls[(u + d) % len(ws_urls)], token)
            setup_seconds = time.monotonic() - setup_started
            await trio.sleep(1)
            for index, rate in enumerate(rates):
                levels.append(await load_level(client, urls, tokens, devices, rate, args.seconds, index))
            nursery.cancel_scope.cancel()
    if args.plot:
        plot(levels, args.plot)
    passing = [lv["rate"] for lv in levels
               if lv["latency_ms"]["p99"] < P99_TARGET_MS and lv["delivered_ratio"] == 1.0 and not lv["write_errors"]]
    for level in levels:
        del level["_latencies_ms"]
    return {
        "scenario": "fanout",
        "users": args.users,
        "devices": args.devices,
        "seconds_per_level": args.seconds,
        "connections": devices.connected,
        "setup_seconds": round(setup_seconds, 1),
        "levels": levels,
        "capacity_writes_per_s": max(passing) if passing else None,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--urls", help="comma-separated base URLs for writes (default: start a local cluster)")
    parser.add_argument("--ws-urls", help="comma-separated base URLs for devices (default: --urls)")
    parser.add_argument("--database-url", help="with --urls: seed users straight into this database")
    parser.add_argument("--secret", help="with --urls: the deployment's NURSERY_SECRET_KEY, to sign tokens")
    parser.add_argument("--register", action="store_true", help="register users through the API instead")
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--devices", type=int, default=3)
    parser.add_argument("--rates", default="200", help="writes/s, comma-separated load levels")
    parser.add_argument("--seconds", type=float, default=20.0, help="duration of each level")
    parser.add_argument("--plot", help="write a PNG: latency CDF per level, p50/p99 vs load")
    print(json.dumps(trio.run(main, parser.parse_args()), indent=2))
