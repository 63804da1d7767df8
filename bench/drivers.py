"""Database and broker drivers under Trio, on nursery's own statements: CPU per operation.

Each candidate runs in its own process (importing trio_asyncio changes asyncio for the whole
process), against a private PostgreSQL (fsync on, as deployed) and redis-server started here.
Reported per candidate and operation: CPU µs per operation (the whole process: the driver,
the event loops, any thread), and operations per second of wall time, sequentially and with
16 concurrent tasks. The servers' own CPU is not counted.

PostgreSQL candidates, on the write of a todo (``create_in_one_statement``: one statement,
its own transaction) and a device's catch-up read (``changes_since``):

    trio-asyncio   asyncpg through trio-asyncio (how the store works today)
    loop-thread    asyncpg on an asyncio loop in a thread of its own; Trio hands it work and
                   is woken when it is done (one thread hop each way)
    uvloop-thread  the same on uvloop
    pg-purepy      pg-purepy 0.12, pure Python on anyio (Trio-native), prepared statements

Redis candidates, on PUBLISH (one; 16 in one pipeline) and on receiving published messages:

    trio-asyncio   redis-py through trio-asyncio (today)
    coredis        coredis 6.9 on anyio (Trio-native)
    resp           nursery.redis.resp: a small RESP client on Trio, replies parsed by hiredis

    .venv/bin/python bench/drivers.py [--seconds 3] [--rounds 3] [--only pg|redis] > drivers.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CONCURRENCY = 16
WRITE = """
    WITH bumped AS (UPDATE users SET rev = rev + 1 WHERE id = $1 RETURNING rev)
    INSERT INTO todos (id, user_id, title, notes, done, due, tags, rev)
    SELECT $2, $1, $3, $4, $5, $6, $7, bumped.rev FROM bumped
    RETURNING id, title, notes, done, due, tags, rev, created_at, updated_at, deleted_at
"""
READ = """
    SELECT u.rev AS head_rev, u.horizon AS head_horizon, t.*
    FROM users u
    LEFT JOIN LATERAL (
        SELECT id, title, notes, done, due, tags, rev, created_at, updated_at, deleted_at
        FROM todos WHERE user_id = u.id AND rev > $2 ORDER BY rev LIMIT $3
    ) t ON true
    WHERE u.id = $1
"""


# -- measuring (in the candidate's process) ------------------------------------------------------


async def measure(op: Callable[[], Awaitable[Any]], seconds: float, tasks: int) -> dict[str, float]:
    import trio

    done = 0
    deadline = trio.current_time() + seconds

    async def worker() -> None:
        nonlocal done
        while trio.current_time() < deadline:
            await op()
            done += 1

    for _ in range(50):  # warm up
        await op()
    cpu, wall = time.process_time(), time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(tasks):
            nursery.start_soon(worker)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {"cpu_us_per_op": round(cpu / done * 1e6, 1), "ops_per_s": round(done / wall)}


async def measure_all(ops: dict[str, Callable[[], Awaitable[Any]]], seconds: float) -> dict[str, Any]:
    results = {}
    for name, op in ops.items():
        results[name] = await measure(op, seconds, 1)
        results[f"{name} x{CONCURRENCY}"] = await measure(op, seconds, CONCURRENCY)
    return results


# -- PostgreSQL candidates ---------------------------------------------------------------------


def pg_args(user_id: uuid.UUID) -> tuple[Any, ...]:
    return (user_id, uuid.uuid4(), "a todo", "", False, None, ["bench"])


async def pg_trio_asyncio(url: str, user_id: uuid.UUID, seconds: float) -> dict[str, Any]:
    import asyncpg
    import trio_asyncio

    async with trio_asyncio.open_loop():
        pool = await trio_asyncio.aio_as_trio(asyncpg.create_pool)(url, min_size=16, max_size=16)

        async def on_connection(query: str, *args: Any) -> Any:
            async with pool.acquire() as conn:
                return await conn.fetch(query, *args)

        async def write() -> Any:
            return await trio_asyncio.aio_as_trio(on_connection)(WRITE, *pg_args(user_id))

        async def read() -> Any:
            return await trio_asyncio.aio_as_trio(on_connection)(READ, user_id, 2**62, 1)

        results = await measure_all({"write": write, "read": read}, seconds)
        await trio_asyncio.aio_as_trio(pool.close)()
        return results


async def pg_loop_thread(url: str, user_id: uuid.UUID, seconds: float, uv: bool) -> dict[str, Any]:
    import asyncio
    import threading

    import asyncpg
    import trio

    if uv:
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    else:
        loop = asyncio.SelectorEventLoop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    token = trio.lowlevel.current_trio_token()

    async def run(coro: Any) -> Any:
        done = trio.Event()
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        future.add_done_callback(lambda _: token.run_sync_soon(done.set))
        await done.wait()
        return future.result()

    async def create_pool() -> Any:
        return await asyncpg.create_pool(url, min_size=16, max_size=16)

    pool = await run(create_pool())

    async def on_connection(query: str, *args: Any) -> Any:
        async with pool.acquire() as conn:
            return await conn.fetch(query, *args)

    async def write() -> Any:
        return await run(on_connection(WRITE, *pg_args(user_id)))

    async def read() -> Any:
        return await run(on_connection(READ, user_id, 2**62, 1))

    results = await measure_all({"write": write, "read": read}, seconds)
    await run(pool.close())
    loop.call_soon_threadsafe(loop.stop)
    thread.join()
    return results


async def pg_purepy(url: str, user_id: uuid.UUID, seconds: float) -> dict[str, Any]:
    from urllib.parse import urlsplit

    import pg_purepy

    parts = urlsplit(url)
    async with pg_purepy.open_pool(
        connection_count=16, address_or_path=parts.hostname, port=parts.port,
        username=parts.username or "postgres", database=parts.path.lstrip("/"),
    ) as pool:
        # It knows no uuid: taught here, as the store would have to.
        pool.add_converter(pg_purepy.SimpleFunctionConverter(2950, uuid.UUID, str))
        write_sql = WRITE.replace("$6", "$6::timestamptz").replace("$7", "$7::text[]")

        async def write() -> Any:
            return await pool.fetch(write_sql, *pg_args(user_id))

        async def read() -> Any:
            return await pool.fetch(READ, user_id, 2**62, 1)

        return await measure_all({"write": write, "read": read}, seconds)


# -- Redis candidates ----------------------------------------------------------------------------


async def redis_trio_asyncio(url: str, seconds: float) -> dict[str, Any]:
    import redis.asyncio as aioredis
    import trio
    import trio_asyncio

    async with trio_asyncio.open_loop():
        client = aioredis.Redis.from_url(url, max_connections=32)

        async def publish() -> Any:
            return await trio_asyncio.aio_as_trio(client.publish)("bench", b"x" * 200)

        async def pipe() -> Any:
            async def run() -> Any:
                p = client.pipeline(transaction=False)
                for _ in range(16):
                    p.publish("bench", b"x" * 200)
                return await p.execute()

            return await trio_asyncio.aio_as_trio(run)()

        results = await measure_all({"publish": publish, "publish 16 in a pipeline": pipe}, seconds)

        sub = client.pubsub()
        await trio_asyncio.aio_as_trio(sub.subscribe)("bench-in")

        async def receive() -> int:
            async def next_message() -> Any:
                while True:
                    m = await sub.get_message(timeout=None)
                    if m and m["type"] == "message":
                        return m

            await trio_asyncio.aio_as_trio(next_message)()
            return 1

        results["receive"] = await measure_receive(url, receive, seconds)
        await trio_asyncio.aio_as_trio(client.aclose)()
        _ = trio
        return results


async def redis_coredis(url: str, seconds: float) -> dict[str, Any]:
    import coredis

    client = coredis.Redis.from_url(url, max_connections=32)
    async with client:

        async def publish() -> Any:
            return await client.publish("bench", b"x" * 200)

        async def pipe() -> Any:
            async with client.pipeline(transaction=False) as p:
                for _ in range(16):
                    p.publish("bench", b"x" * 200)
            return None

        results = await measure_all({"publish": publish, "publish 16 in a pipeline": pipe}, seconds)
        async with client.pubsub(channels=["bench-in"]) as sub:
            iterator = sub.__aiter__()

            async def receive() -> int:
                await iterator.__anext__()
                return 1

            results["receive"] = await measure_receive(url, receive, seconds)
        return results


async def redis_resp(url: str, seconds: float) -> dict[str, Any]:
    from nursery.redis.resp import Connection, Subscriber

    async with Connection.open(url, timeout=3) as client:

        async def publish() -> Any:
            return await client.call(b"PUBLISH", b"bench", b"x" * 200)

        async def pipe() -> Any:
            return await client.pipeline([(b"PUBLISH", b"bench", b"x" * 200)] * 16)

        results = await measure_all({"publish": publish, "publish 16 in a pipeline": pipe}, seconds)
    async with Subscriber.open(url, [b"bench-in"], timeout=3) as sub:

        async def receive() -> int:
            return len(await sub.messages())

        results["receive"] = await measure_receive(url, receive, seconds)
    return results


async def measure_receive(url: str, receive: Callable[[], Awaitable[int]], seconds: float) -> dict[str, float]:
    """CPU per message received, while another process publishes as fast as it can
    (``receive`` returns how many messages it took)."""
    import trio

    publisher = subprocess.Popen(
        [sys.executable, __file__, "--publisher", url, str(seconds + 2)],
        stdout=subprocess.DEVNULL,
    )
    try:
        await receive()  # the first one: the publisher is running
        done = 0
        cpu, wall = time.process_time(), time.perf_counter()
        with trio.move_on_after(seconds):
            while True:
                done += await receive()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    finally:
        publisher.kill()
        publisher.wait()
    return {"cpu_us_per_op": round(cpu / max(done, 1) * 1e6, 1), "ops_per_s": round(done / wall)}


def publisher(url: str, seconds: float) -> None:
    """Publish to ``bench-in`` in pipelines of 64 (redis-py, blocking) until time is up."""
    import redis

    client = redis.Redis.from_url(url)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pipe = client.pipeline(transaction=False)
        for _ in range(64):
            pipe.publish("bench-in", b"x" * 200)
        pipe.execute()


# -- driving -------------------------------------------------------------------------------------

CANDIDATES = {
    "pg trio-asyncio": lambda a: pg_trio_asyncio(a.url, uuid.UUID(a.user), a.seconds),
    "pg loop-thread": lambda a: pg_loop_thread(a.url, uuid.UUID(a.user), a.seconds, False),
    "pg uvloop-thread": lambda a: pg_loop_thread(a.url, uuid.UUID(a.user), a.seconds, True),
    "pg pg-purepy": lambda a: pg_purepy(a.url, uuid.UUID(a.user), a.seconds),
    "redis trio-asyncio": lambda a: redis_trio_asyncio(a.url, a.seconds),
    "redis coredis": lambda a: redis_coredis(a.url, a.seconds),
    "redis resp": lambda a: redis_resp(a.url, a.seconds),
}


def run_candidate(name: str, url: str, user: str, seconds: float) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--candidate", name, url, user, str(seconds)],
        capture_output=True, text=True, timeout=600,
    )
    if out.returncode:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "failed"}
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def prepare_database(url: str) -> str:
    import asyncio

    import asyncpg

    from nursery.stores.postgres.migrate import apply_migrations

    async def prepare() -> str:
        conn = await asyncpg.connect(url)
        await apply_migrations(conn)
        user = uuid.uuid4()
        await conn.execute("INSERT INTO users (id, email, password_hash) VALUES ($1, $2, 'x')",
                           user, f"{user}@bench.example.com")
        await conn.close()
        return str(user)

    return asyncio.run(prepare())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", choices=["pg", "redis"])
    parser.add_argument("--candidate", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--publisher", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.publisher:
        publisher(args.publisher[0], float(args.publisher[1]))
        return
    if args.candidate:
        import trio

        name, url, user, seconds = args.candidate
        ns = argparse.Namespace(url=url, user=user, seconds=float(seconds))
        print(json.dumps(trio.run(CANDIDATES[name], ns)))
        return

    from tests.servers import PrivatePostgres, RedisServer, scratch_dir

    pg_dir, redis_dir = scratch_dir("drivers-pg-"), scratch_dir("drivers-redis-")
    pg, redis_server = PrivatePostgres(pg_dir), RedisServer(redis_dir)
    try:
        pg.start()
        redis_server.start()
        db_url = pg.create_database("bench")
        user = prepare_database(db_url)
        rounds: dict[str, list[dict[str, Any]]] = {}
        for _ in range(args.rounds):
            for name in CANDIDATES:
                if args.only and not name.startswith(args.only):
                    continue
                url = db_url if name.startswith("pg") else redis_server.url
                result = run_candidate(name, url, user, args.seconds)
                rounds.setdefault(name, []).append(result)
                print(name, json.dumps(result), file=sys.stderr, flush=True)
        print(json.dumps({"machine": os.uname().nodename, "date": time.strftime("%Y-%m-%d"),
                          "seconds": args.seconds, "medians": medians(rounds), "rounds": rounds},
                         indent=1))
    finally:
        pg.stop()
        redis_server.stop()
        shutil.rmtree(pg_dir, ignore_errors=True)
        shutil.rmtree(redis_dir, ignore_errors=True)


def medians(rounds: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for name, results in rounds.items():
        ok = [r for r in results if "error" not in r]
        if not ok:
            table[name] = results[0]
            continue
        table[name] = {
            op: {k: statistics.median(r[op][k] for r in ok) for k in ok[0][op]} for op in ok[0]
        }
    return table


if __name__ == "__main__":
    main()
