"""The Redis broker when Redis goes away: a private redis-server (``own_redis``) is stopped,
restarted or paused (``CLIENT PAUSE``: connections stay open but nothing is answered, as with
a frozen host or a half-open TCP connection) under a live subscription.

Timings are printed (``pytest -s``) and asserted against generous bounds.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import pytest
import trio

from nursery.errors import BrokerUnavailable
from nursery.pubsub import Delivery, Followed, Message, Resubscribed
from nursery.pubsub.redis import RedisBroker, RedisPresence

TIMEOUT = 1.0  # broker timeout in these tests
PING_INTERVAL = 0.25
BACKOFF_CAP = 2.0  # RedisBroker's longest wait between reconnect attempts

if TYPE_CHECKING:
    from tests.servers import RedisServer


@asynccontextmanager
async def redis_broker(url: str) -> AsyncIterator[RedisBroker]:
    async with RedisBroker.open(url, TIMEOUT) as broker:
        broker.ping_interval = PING_INTERVAL
        yield broker


async def subscribe(
    nursery: trio.Nursery, broker: RedisBroker
) -> trio.MemoryReceiveChannel[Delivery]:
    """A subscription that follows the user "ada" (confirmations are not passed on)."""
    send, receive = trio.open_memory_channel[Delivery](1000)

    def deliver(delivery: Delivery) -> None:
        if not isinstance(delivery, Followed):
            send.send_nowait(delivery)

    await nursery.start(broker.subscribe, deliver)
    broker.follow("ada")
    while not broker.following("ada"):
        await trio.sleep(0.005)
    return receive


async def stop(server: RedisServer) -> None:
    await trio.to_thread.run_sync(server.stop)


async def start(server: RedisServer) -> None:
    await trio.to_thread.run_sync(server.start)


async def pause(server: RedisServer, seconds: float) -> None:
    """Redis keeps every connection open but answers nothing for ``seconds``."""
    reply = await trio.to_thread.run_sync(
        server.command, "CLIENT", "PAUSE", str(int(seconds * 1000)), "ALL"
    )
    assert reply == b"+OK"


async def wait_disconnected(broker: RedisBroker) -> None:
    while broker.connected:
        await trio.sleep(0.01)


@pytest.mark.parametrize("fault", ["stopped", "paused"])
async def test_publish_fails_within_the_timeout_when_redis_is_gone(
    own_redis: RedisServer, fault: str
) -> None:
    with trio.fail_after(15):
        async with (
            redis_broker(own_redis.url) as broker,
            RedisPresence.open(own_redis.url, TIMEOUT) as presence,
            trio.open_nursery() as nursery,
        ):
            await subscribe(nursery, broker)
            await (stop(own_redis) if fault == "stopped" else pause(own_redis, 5))
            for name, operation in [
                ("publish", lambda: broker.publish_many([("ada", b"lost")])),
                ("presence refresh", lambda: presence.refresh({"u": {"s"}}, 10)),
                ("presence online", lambda: presence.online("u")),
            ]:
                began = time.perf_counter()
                with pytest.raises(BrokerUnavailable):
                    await operation()
                took = time.perf_counter() - began
                print(f"\n{fault}: {name} failed after {took * 1000:.1f} ms")
                assert took < TIMEOUT + 0.5
            nursery.cancel_scope.cancel()


async def test_subscriber_resubscribes_after_a_restart_and_messages_flow_again(
    own_redis: RedisServer,
) -> None:
    with trio.fail_after(20):
        async with redis_broker(own_redis.url) as broker, trio.open_nursery() as nursery:
            inbox = await subscribe(nursery, broker)
            await broker.publish_many([("ada", b"before")])
            assert await inbox.receive() == Message("ada", b"before")

            await stop(own_redis)
            await wait_disconnected(broker)
            with pytest.raises(BrokerUnavailable):
                await broker.publish_many([("ada", b"lost")])
            await trio.sleep(1.0)  # a real outage: the subscriber is backing off

            await start(own_redis)
            back = time.perf_counter()
            assert await inbox.receive() == Resubscribed()
            took = time.perf_counter() - back
            print(f"\nresubscribed {took * 1000:.0f} ms after redis answered again")
            assert took < BACKOFF_CAP + TIMEOUT

            # the same process publishes again, on a fresh connection; ada's topic was
            # subscribed again before Resubscribed was said
            await broker.publish_many([("ada", b"after")])
            assert await inbox.receive() == Message("ada", b"after")
            assert broker.reconnects == 1 and broker.connected
            nursery.cancel_scope.cancel()


async def test_a_silent_connection_is_noticed_and_replaced(own_redis: RedisServer) -> None:
    pause_for = 3.0
    with trio.fail_after(20):
        async with redis_broker(own_redis.url) as broker, trio.open_nursery() as nursery:
            inbox = await subscribe(nursery, broker)
            paused = time.perf_counter()
            await pause(own_redis, pause_for)
            await wait_disconnected(broker)
            noticed = time.perf_counter() - paused
            print(f"\nsilent connection noticed after {noticed * 1000:.0f} ms")
            assert noticed < PING_INTERVAL + TIMEOUT + 0.5
            assert await inbox.receive() == Resubscribed()
            assert time.perf_counter() - paused < pause_for + BACKOFF_CAP + TIMEOUT
            await broker.publish_many([("ada", b"after")])
            assert await inbox.receive() == Message("ada", b"after")
            assert broker.reconnects == 1
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("state", ["live", "redis-stopped", "redis-paused"])
async def test_cancelling_the_subscription_returns_promptly(
    own_redis: RedisServer, state: str
) -> None:
    with trio.fail_after(15):
        async with redis_broker(own_redis.url) as broker, trio.open_nursery() as nursery:
            await subscribe(nursery, broker)
            if state == "redis-stopped":  # cancelled while backing off / reconnecting
                await stop(own_redis)
                await wait_disconnected(broker)
            elif state == "redis-paused":  # cancelled while a read is in flight
                await pause(own_redis, 5)
                await trio.sleep(PING_INTERVAL * 2)
            began = time.perf_counter()
            nursery.cancel_scope.cancel()
        took = time.perf_counter() - began  # the broker and the asyncio loop closed too
        print(f"\ncancelled ({state}) in {took * 1000:.1f} ms")
        assert took < 1.0
        if state == "live":  # the subscriber's connection was closed, not abandoned
            while own_redis.command("CLIENT", "LIST", "TYPE", "pubsub") != b"$0":
                await trio.sleep(0.01)


async def test_first_subscribe_fails_loudly_when_redis_is_down(own_redis: RedisServer) -> None:
    await stop(own_redis)
    with trio.fail_after(10):
        async with redis_broker(own_redis.url) as broker:
            began = time.perf_counter()
            async with trio.open_nursery() as nursery:
                with pytest.raises(BrokerUnavailable, match="cannot subscribe"):
                    await nursery.start(broker.subscribe, lambda delivery: None)
            assert time.perf_counter() - began < 2 * TIMEOUT + 0.5


async def test_presence_works_again_after_a_restart(own_redis: RedisServer) -> None:
    with trio.fail_after(15):
        async with RedisPresence.open(own_redis.url, TIMEOUT) as presence:
            await presence.refresh({"u": {"s"}}, 10)
            await stop(own_redis)
            with pytest.raises(BrokerUnavailable):
                await presence.online("u")
            await start(own_redis)  # no persistence: the entry is gone with the data
            await presence.refresh({"u": {"s"}}, 10)
            assert await presence.online("u") == {"s"}


async def test_a_storm_of_new_users_is_a_few_subscribe_commands(own_redis: RedisServer) -> None:
    """5,000 users followed at once (a reconnect storm) are subscribed in batches: a handful
    of SUBSCRIBE commands, not one each, and every one of them is heard."""

    def subscribe_calls() -> int:
        with socket.create_connection(("127.0.0.1", own_redis.port), timeout=5) as sock:
            sock.sendall(b"INFO commandstats\r\n")
            info = b""
            while b"cmdstat_info" not in info and not info.endswith(b"\r\n\r\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                info += chunk
        found = re.search(rb"cmdstat_subscribe:calls=(\d+)", info)
        return int(found.group(1)) if found else 0

    users = [f"user-{i}" for i in range(5000)]
    with trio.fail_after(20):
        async with redis_broker(own_redis.url) as broker, trio.open_nursery() as nursery:
            await subscribe(nursery, broker)
            before = subscribe_calls()
            for user in users:
                broker.follow(user)
            while not all(broker.following(user) for user in users):
                await trio.sleep(0.01)
            calls = subscribe_calls() - before
            print(f"\n5000 users followed in {calls} SUBSCRIBE commands")
            assert 1 <= calls <= 10
            nursery.cancel_scope.cancel()
