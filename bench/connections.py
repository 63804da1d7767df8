"""Idle connections: hold N websockets (each through hello/welcome, then silent but for
pongs) and measure the server's resident memory per connection.

    .venv/bin/python bench/connections.py --connections 18000          # straight to 3 instances
    .venv/bin/python bench/connections.py --connections 9000 --via URL  # e.g. through Caddy
    .venv/bin/python bench/connections.py --connections 6000 --deflate --deliver  # as browsers

``--deflate``: every socket offers permessage-deflate, as browsers do (compression is what
made a browser's socket cost ~160 KiB before). ``--deliver``: once all are open, one change
is written for every user, so every socket has carried a frame before RSS is read.

Without ``--urls``/``--via`` it starts PostgreSQL, Redis and 3 instances itself and reads
their RSS from /proc; with them, pass ``--pids`` to measure (else only the count is checked).
The load generator splits the sockets over ``--procs`` processes (descriptors: 20,000 each);
its websockets are the lean ones of ``wire.py``, so that holding them costs little CPU and memory.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from contextlib import AsyncExitStack
from typing import Any

import trio

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wire
import wire_ws
from local_cluster import local_cluster
from seed import seed_users


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


async def hold(ws_urls: list[str], tokens: list[str], ready: Any, release: Any, connect_parallel: int,
               deflate: bool, delivered: Any) -> None:
    """One load-generator process: open every socket, report, then hold them until told.
    Once open, one task reads them all (``wire_ws.WebSocketGroup``): no task per socket."""
    group = wire_ws.WebSocketGroup()
    handshakes = trio.Semaphore(connect_parallel)
    failed = 0

    async def one(index: int, token: str) -> None:
        nonlocal failed
        async with handshakes:
            ws = None
            try:
                ws = await wire_ws.connect_websocket(ws_urls[index % len(ws_urls)], offer_deflate=deflate)
                await ws.send_text(json.dumps({"type": "hello", "token": token, "since": None}))
                with trio.fail_after(wire.TIMEOUT):
                    await ws.receive()
            except wire.NETWORK_ERRORS:
                if ws is not None:
                    ws.close()
                failed += 1
                return
            group.add(ws)

    def on_message(ws: wire_ws.WebSocket, message: str | bytes) -> None:
        if isinstance(message, str) and '"ping"' in message:
            ws.send_text_nowait('{"type":"pong"}')
        elif isinstance(message, str) and '"change"' in message:
            delivered.put(1)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(group.serve, on_message)
        async with trio.open_nursery() as connecting:
            for index, token in enumerate(tokens):
                connecting.start_soon(one, index, token)
        ready.put((len(group) + group.closed, failed))
        await trio.to_thread.run_sync(release.wait)
        nursery.cancel_scope.cancel()
    group.close()


def _process_main(ws_urls: list[str], tokens: list[str], ready: Any, release: Any, parallel: int,
                  deflate: bool, delivered: Any) -> None:
    try:
        trio.run(hold, ws_urls, tokens, ready, release, parallel, deflate, delivered)
    except BaseException:  # noqa: BLE001 - sockets torn down at exit: nothing left to report
        pass


async def main(args: argparse.Namespace) -> dict[str, Any]:
    async with AsyncExitStack() as stack:
        if args.urls:
            urls, pids = args.urls.split(","), [int(p) for p in args.pids.split(",")] if args.pids else []
            database_url, secret = args.database_url, args.secret
        else:
            cluster = await stack.enter_async_context(local_cluster(3))
            urls, pids, database_url, secret = cluster.urls, cluster.pids, cluster.database_url, cluster.secret
        via = (args.via or ",".join(urls)).split(",")
        ws_urls = [u.replace("http://", "ws://") + "/ws" for u in via]
        users = max(1, args.connections // 3)
        tokens = [t for user in await seed_users(database_url, secret, users, 3) for t in user][: args.connections]
        await trio.sleep(2)
        proxy = [args.proxy_pid] if args.proxy_pid else []
        before = {pid: rss_kib(pid) for pid in pids + proxy}
        ctx = multiprocessing.get_context("spawn")
        ready, release, delivered = ctx.Queue(), ctx.Event(), ctx.Queue()
        share = (len(tokens) + args.procs - 1) // args.procs
        workers = [ctx.Process(target=_process_main,
                               args=(ws_urls, tokens[i * share:(i + 1) * share], ready, release,
                                     args.parallel, args.deflate, delivered))
                   for i in range(args.procs)]
        started = time.monotonic()
        for worker in workers:
            worker.start()
        results = [await trio.to_thread.run_sync(ready.get) for _ in workers]
        connect_seconds = time.monotonic() - started
        frames = 0
        if args.deliver:  # one change per user: every socket carries a frame
            opened_now = sum(r[0] for r in results)
            pool = wire.HTTPPool(urls[0], max_connections=16)
            users_tokens = tokens[::3]

            async def write(token: str) -> None:
                body = b'{"title":"one change"}'
                await pool.request(lambda: (
                    b"POST /api/todos HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Authorization: Bearer " + token.encode() + b"\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body)))

            async with trio.open_nursery() as writers:
                limit = trio.Semaphore(16)

                async def limited(token: str) -> None:
                    async with limit:
                        await write(token)

                for token in users_tokens:
                    writers.start_soon(limited, token)
            with trio.move_on_after(60):
                while frames < opened_now:
                    frames += await trio.to_thread.run_sync(delivered.get)
            pool.close()
        await trio.sleep(args.settle)
        after = {pid: rss_kib(pid) for pid in pids + proxy}
        release.set()
        for worker in workers:
            await trio.to_thread.run_sync(worker.join, 30)
    opened = sum(r[0] for r in results)
    grown = sum(after[p] - before[p] for p in pids)
    return {
        "scenario": "connections",
        "target": args.connections,
        "via": via,
        "opened": opened,
        "failed": sum(r[1] for r in results),
        "connect_seconds": round(connect_seconds, 1),
        "offered_deflate": args.deflate,
        "frames_delivered": frames if args.deliver else None,
        "server_rss_kib_before": before,
        "server_rss_kib_after": after,
        "server_rss_kib_per_connection": round(grown / opened, 2) if pids and opened else None,
        "proxy_rss_kib_per_connection": (
            round((after[proxy[0]] - before[proxy[0]]) / opened, 2) if proxy and opened else None
        ),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=3000)
    parser.add_argument("--urls", help="instance base URLs (default: start a local cluster)")
    parser.add_argument("--via", help="base URLs the sockets connect to (default: the instances)")
    parser.add_argument("--pids", help="with --urls: the instances' pids, to read their RSS")
    parser.add_argument("--proxy-pid", type=int, help="with --via: the proxy's pid, to read its RSS too")
    parser.add_argument("--database-url")
    parser.add_argument("--secret")
    parser.add_argument("--procs", type=int, default=2, help="load-generator processes")
    parser.add_argument("--parallel", type=int, default=64, help="handshakes at once per process")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds before reading RSS")
    parser.add_argument("--deflate", action="store_true", help="offer permessage-deflate, as browsers do")
    parser.add_argument("--deliver", action="store_true", help="one change per user before reading RSS")
    print(json.dumps(trio.run(main, parser.parse_args()), indent=2))
