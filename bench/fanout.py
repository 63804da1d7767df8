"""Fan-out latency: U users × D devices connected, R writes/s via REST for S seconds.

For every change, the latency from the moment its write request was sent to its arrival on
each of the user's devices (devices spread over the instances, writes sent to one instance at
random, so most deliveries cross instances through Redis). Prints one JSON object.

    .venv/bin/python bench/fanout.py --users 100 --devices 3 --rate 200 --seconds 20
    .venv/bin/python bench/fanout.py --urls http://127.0.0.1:4001,http://127.0.0.1:4002 ...

Without ``--urls`` it starts its own PostgreSQL (fsync on), Redis and 3 instances.
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
import uuid
from contextlib import AsyncExitStack
from typing import Any

import httpx
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

sys.path.insert(0, os.path.dirname(__file__))
from local_cluster import local_cluster  # noqa: E402

PASSWORD = "benchmark password"


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Run:
    def __init__(self) -> None:
        self.sent_at: dict[str, float] = {}  # todo title → monotonic send time
        self.latencies: list[float] = []
        self.delivered = 0
        self.write_errors = 0
        self.connected = 0


async def device(run: Run, ws_url: str, token: str, ready: trio.CapacityLimiter | Any, *, task_status: Any) -> None:
    async with open_websocket_url(ws_url, max_message_size=2**20) as ws:
        await ws.send_message(json.dumps({"type": "hello", "token": token, "since": None}))
        await ws.get_message()  # welcome
        run.connected += 1
        task_status.started()
        try:
            while True:
                frame = json.loads(await ws.get_message())
                kind = frame["type"]
                if kind == "change" and frame["op"] == "upsert":
                    sent = run.sent_at.get(frame["todo"]["title"])
                    if sent is not None:
                        run.latencies.append(time.monotonic() - sent)
                        run.delivered += 1
                elif kind == "ping":
                    await ws.send_message('{"type":"pong"}')
        except ConnectionClosed:
            pass


async def setup_users(client: httpx.AsyncClient, urls: list[str], users: int, devices: int) -> list[list[str]]:
    """Register users and log in their devices; returns tokens per user."""
    tokens: list[list[str]] = [[] for _ in range(users)]
    limiter = trio.CapacityLimiter(12)

    async def one(index: int) -> None:
        async with limiter:
            email = f"bench-{uuid.uuid4().hex[:12]}@example.com"
            base = urls[index % len(urls)]
            r = await client.post(f"{base}/api/auth/register", json={"email": email, "password": PASSWORD, "device": "d0"})
            r.raise_for_status()
            tokens[index].append(r.json()["token"])
            for d in range(1, devices):
                r = await client.post(f"{urls[(index + d) % len(urls)]}/api/auth/login",
                                      json={"email": email, "password": PASSWORD, "device": f"d{d}"})
                r.raise_for_status()
                tokens[index].append(r.json()["token"])

    async with trio.open_nursery() as nursery:
        for index in range(users):
            nursery.start_soon(one, index)
    return tokens


async def main(args: argparse.Namespace) -> dict[str, Any]:
    async with AsyncExitStack() as stack:
        urls = args.urls.split(",") if args.urls else await stack.enter_async_context(local_cluster(3))
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        client = await stack.enter_async_context(httpx.AsyncClient(limits=limits, timeout=30))
        setup_started = time.monotonic()
        tokens = await setup_users(client, urls, args.users, args.devices)
        run = Run()
        async with trio.open_nursery() as nursery:
            for u, user_tokens in enumerate(tokens):
                for d, token in enumerate(user_tokens):
                    ws_url = urls[(u + d) % len(urls)].replace("http://", "ws://") + "/ws"
                    await nursery.start(device, run, ws_url, token, None)
            setup_seconds = time.monotonic() - setup_started
            cpu_before = resource.getrusage(resource.RUSAGE_SELF)
            writes = int(args.rate * args.seconds)
            in_flight = trio.CapacityLimiter(128)

            async def write(index: int) -> None:
                u = random.randrange(args.users)
                title = f"w{index}"
                headers = {"Authorization": f"Bearer {tokens[u][0]}"}
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
                    await trio.sleep_until(trio.current_time() + max(0.0, started + index / args.rate - time.monotonic()))
                    writers.start_soon(write, index)
            write_seconds = time.monotonic() - started
            expected = writes * args.devices
            with trio.move_on_after(10):
                while run.delivered < expected - run.write_errors * args.devices:
                    await trio.sleep(0.05)
            cpu_after = resource.getrusage(resource.RUSAGE_SELF)
            nursery.cancel_scope.cancel()
    cpu = (cpu_after.ru_utime + cpu_after.ru_stime) - (cpu_before.ru_utime + cpu_before.ru_stime)
    lat_ms = [x * 1000 for x in run.latencies]
    return {
        "scenario": "fanout",
        "users": args.users,
        "devices": args.devices,
        "rate": args.rate,
        "seconds": args.seconds,
        "writes": writes,
        "write_errors": run.write_errors,
        "achieved_write_rate": round(writes / write_seconds, 1),
        "expected_deliveries": expected,
        "delivered": run.delivered,
        "delivered_ratio": round(run.delivered / expected, 5) if expected else None,
        "latency_ms": {
            "p50": round(percentile(lat_ms, 0.50), 2),
            "p90": round(percentile(lat_ms, 0.90), 2),
            "p99": round(percentile(lat_ms, 0.99), 2),
            "max": round(max(lat_ms), 2) if lat_ms else None,
            "mean": round(statistics.fmean(lat_ms), 2) if lat_ms else None,
        },
        "load_generator_cpu_share": round(cpu / write_seconds, 2),
        "setup_seconds": round(setup_seconds, 1),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--urls", help="comma-separated instance base URLs (default: start a local cluster)")
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--devices", type=int, default=3)
    parser.add_argument("--rate", type=float, default=200.0, help="writes per second")
    parser.add_argument("--seconds", type=float, default=20.0)
    print(json.dumps(trio.run(main, parser.parse_args()), indent=2))
