"""One contract for every broker and presence backend (memory, redis), plus the factory.

Each backend is exercised as a deployment of several instances: with memory they share one
``MemoryBroker`` and one presence table (``sibling()``); with Redis each instance has its own
``open_broker`` against one real, flushed redis-server (``redis_url`` from conftest), or
against a real 3-master Redis Cluster (``redis_cluster_url``; sharded pub/sub).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager

import pytest
import trio

from nursery.config import ConfigError, Settings
from nursery.errors import BrokerUnavailable
from nursery.pubsub import (
    EVERYONE,
    Broker,
    Delivery,
    Followed,
    MemoryBroker,
    MemoryPresence,
    Message,
    Presence,
    Resubscribed,
    open_broker,
)

TIMEOUT = 2.0  # the broker timeout in these tests
Instance = tuple[Broker, Presence]
OpenInstances = Callable[[int], AbstractAsyncContextManager[list[Instance]]]


@asynccontextmanager
async def _memory_instances(n: int) -> AsyncIterator[list[Instance]]:
    async with open_broker(Settings()) as (broker, presence):
        assert isinstance(broker, MemoryBroker) and isinstance(presence, MemoryPresence)
        pairs: list[Instance] = [(broker, presence)]
        yield pairs + [(broker.sibling(), presence.sibling()) for _ in range(n - 1)]


def _redis_instances(url: str, *, cluster: bool) -> OpenInstances:
    @asynccontextmanager
    async def open_instances(n: int) -> AsyncIterator[list[Instance]]:
        async with AsyncExitStack() as stack:
            settings = Settings(redis_url=url, redis_cluster=cluster, broker_timeout=TIMEOUT)
            yield [await stack.enter_async_context(open_broker(settings)) for _ in range(n)]

    return open_instances


@pytest.fixture(params=["memory", "redis", "redis-cluster"])
def instances(request: pytest.FixtureRequest) -> OpenInstances:
    """``async with instances(n) as [(broker, presence), ...]``: n instances of one deployment
    (on a 3-master Redis Cluster with "redis-cluster")."""
    if request.param == "memory":
        return _memory_instances
    if request.param == "redis":
        return _redis_instances(request.getfixturevalue("redis_url"), cluster=False)
    return _redis_instances(request.getfixturevalue("redis_cluster_url"), cluster=True)


class Inbox:
    """One subscription's deliveries: its messages, and the topics it was told it hears."""

    def __init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[Delivery](100_000)
        self.followed: set[str] = set()

    def deliver(self, delivery: Delivery) -> None:
        self._send.send_nowait(delivery)

    async def message(self) -> Message:
        while True:
            delivery = await self._receive.receive()
            if isinstance(delivery, Followed):
                self.followed |= delivery.topics
            elif isinstance(delivery, Message):
                return delivery
            else:
                raise TypeError(f"unexpected {delivery!r}")

    def nothing_more(self) -> bool:
        """No message waiting (confirmations aside)."""
        while True:
            try:
                delivery = self._receive.receive_nowait()
            except trio.WouldBlock:
                return True
            if not isinstance(delivery, Followed):
                return False


async def subscribe(nursery: trio.Nursery, broker: Broker, *topics: str) -> Inbox:
    """A subscription owned by ``nursery``, following ``topics`` (heard when this returns)."""
    inbox = Inbox()
    await nursery.start(broker.subscribe, inbox.deliver)
    for topic in topics:
        broker.follow(topic)
    await heard(broker, *topics)
    return inbox


async def heard(broker: Broker, *topics: str) -> None:
    while not all(broker.following(t) for t in topics):
        await trio.sleep(0.005)


async def test_messages_reach_the_followers_of_their_topic_in_publish_order(
    instances: OpenInstances,
) -> None:
    with trio.fail_after(10):
        async with instances(3) as [(a, _), (b, _), (c, _)], trio.open_nursery() as nursery:
            on_a, on_b = await subscribe(nursery, a, "ada"), await subscribe(nursery, b, "ada")
            on_c = await subscribe(nursery, c, "bob")  # c has none of ada's devices
            sent = [f"message {i}".encode() for i in range(100)]
            for payload in sent:
                await a.publish_many([("ada", payload)])
            await a.publish_many([("bob", b"for bob")])
            for inbox in (on_a, on_b):
                assert [await inbox.message() for _ in sent] == [Message("ada", p) for p in sent]
            assert await on_c.message() == Message("bob", b"for bob")  # and nothing of ada's
            assert on_a.nothing_more() and on_b.nothing_more() and on_c.nothing_more()
            nursery.cancel_scope.cancel()


async def test_everyone_is_heard_by_every_instance(instances: OpenInstances) -> None:
    with trio.fail_after(10):
        async with instances(2) as [(a, _), (b, _)], trio.open_nursery() as nursery:
            inboxes = [await subscribe(nursery, a), await subscribe(nursery, b)]
            await b.publish_many([(EVERYONE, b"revoked")])
            for inbox in inboxes:
                assert await inbox.message() == Message(EVERYONE, b"revoked")
            nursery.cancel_scope.cancel()


async def test_an_unfollowed_topic_is_not_heard_any_more(instances: OpenInstances) -> None:
    with trio.fail_after(10):
        async with instances(2) as [(a, _), (b, _)], trio.open_nursery() as nursery:
            inbox = await subscribe(nursery, b, "ada", "bob")
            b.unfollow("ada")
            while b.following("ada"):
                await trio.sleep(0.005)
            await a.publish_many([("ada", b"not for b"), ("bob", b"for b")])
            assert await inbox.message() == Message("bob", b"for b")  # ada's was not delivered
            b.follow("ada")
            await heard(b, "ada")
            await a.publish_many([("ada", b"again")])
            assert await inbox.message() == Message("ada", b"again")
            nursery.cancel_scope.cancel()


async def test_topics_followed_while_others_are_being_subscribed_are_all_heard(
    instances: OpenInstances,
) -> None:
    """Sockets arrive one by one while the broker is busy subscribing the previous ones (a
    reconnect storm): every topic ends up heard, and its messages delivered."""
    topics = [f"user-{i}" for i in range(300)]
    with trio.fail_after(10):
        async with instances(2) as [(a, _), (b, _)], trio.open_nursery() as nursery:
            inbox = await subscribe(nursery, b)
            for topic in topics:
                b.follow(topic)
                await trio.sleep(0)  # let the subscription's task run in between
            await heard(b, *topics)
            await a.publish_many([(topic, b"x") for topic in topics])
            assert {(await inbox.message()).topic for _ in topics} == set(topics)
            nursery.cancel_scope.cancel()


async def test_publish_many_delivers_each_in_order_after_earlier_publishes(instances: OpenInstances) -> None:
    with trio.fail_after(10):
        async with instances(2) as [(a, _), (b, _)], trio.open_nursery() as nursery:
            inbox = await subscribe(nursery, b, "t")
            await a.publish_many([("t", b"first")])
            await a.publish_many([("t", f"batch {i}".encode()) for i in range(50)])
            await a.publish_many([])  # nothing to send is not an error
            await a.publish_many([("t", b"alone"), ("t", b"last")])
            expected = [b"first", *(f"batch {i}".encode() for i in range(50)), b"alone", b"last"]
            assert [await inbox.message() for _ in expected] == [Message("t", p) for p in expected]
            nursery.cancel_scope.cancel()


async def test_payload_bytes_round_trip(instances: OpenInstances) -> None:
    payloads = [
        b"",
        b"\x00",
        bytes(range(256)),
        b"\r\n$5\r\n*1\r\n",  # looks like RESP framing
        '{"type":"change","title":"caf\u00e9 \u2615"}'.encode(),
        bytes(range(256)) * 256,  # 64 KiB, the largest websocket frame
    ]
    with trio.fail_after(10):
        async with instances(2) as [(a, _), (b, _)], trio.open_nursery() as nursery:
            inbox = await subscribe(nursery, b, "t")
            await a.publish_many([("t", p) for p in payloads])
            for payload in payloads:
                received = await inbox.message()
                assert type(received.payload) is bytes
                assert received.payload == payload
            nursery.cancel_scope.cancel()


async def test_cancelled_subscriber_gets_nothing_more(instances: OpenInstances) -> None:
    with trio.fail_after(10):
        async with instances(2) as [(broker, _), (leaving, _)], trio.open_nursery() as nursery:
            stays = await subscribe(nursery, broker, "t")
            with trio.CancelScope() as leaving_scope:
                async with trio.open_nursery() as inner:
                    leaves = await subscribe(inner, leaving, "t")
                    leaving_scope.cancel()
            await broker.publish_many([("t", b"after")])
            assert await stays.message() == Message("t", b"after")
            assert leaves.nothing_more()
            nursery.cancel_scope.cancel()


async def test_presence_refresh_online_remove(instances: OpenInstances) -> None:
    ttl = 30.0
    with trio.fail_after(10):
        async with instances(2) as [(_, a), (_, b)]:
            assert await a.online("u1") == set()
            await a.refresh({"u1": {"s1", "s2"}, "u2": {"s3"}, "u3": set()}, ttl)
            # the same session connected to two instances (say, while switching) counts once
            await b.refresh({"u1": {"s2", "s4"}}, ttl)
            assert await a.online("u1") == await b.online("u1") == {"s1", "s2", "s4"}
            assert await b.online("u2") == {"s3"}
            assert await b.online("u3") == set()
            assert await b.online_many(["u1", "u2", "u3", "nobody"]) == {
                "u1": {"s1", "s2", "s4"}, "u2": {"s3"}, "u3": set(), "nobody": set()
            }

            # remove forgets only the calling instance's entry
            await a.remove("u1", "s2")
            assert await b.online("u1") == {"s1", "s2", "s4"}
            await b.remove("u1", "s2")
            await a.remove("u1", "s1")
            assert await a.online("u1") == {"s4"}
            await a.remove("u1", "never-there")  # not an error
            await b.refresh({}, ttl)  # nothing to do, not an error
            assert await a.online("u2") == {"s3"}


async def test_presence_expires_after_ttl_unless_refreshed(instances: OpenInstances) -> None:
    # Real time, because Redis expires by its clock: keep the TTL short.
    ttl = 0.4
    with trio.fail_after(10):
        async with instances(2) as [(_, a), (_, crashed)]:
            await a.refresh({"u1": {"alive"}}, ttl)
            await crashed.refresh({"u1": {"zombie"}}, ttl)
            assert await a.online("u1") == {"alive", "zombie"}
            # `a` keeps refreshing; `crashed` never refreshes or removes again
            for _ in range(3):
                await trio.sleep(ttl / 2)
                await a.refresh({"u1": {"alive"}}, ttl)
            assert await a.online("u1") == {"alive"}
            await trio.sleep(ttl * 1.5)
            assert await a.online("u1") == set()


# -- the memory backend on its own ------------------------------------------------------------


async def test_memory_presence_expiry_follows_the_trio_clock(
    autojump_clock: trio.abc.Clock,
) -> None:
    presence = MemoryPresence()
    with trio.fail_after(100):
        await presence.refresh({"u1": {"s1"}}, 15.0)
        await trio.sleep(14.9)
        assert await presence.online("u1") == {"s1"}
        await trio.sleep(0.2)
        assert await presence.online("u1") == set()


async def test_memory_deliver_error_fails_the_subscriber_not_the_publisher() -> None:
    broker = MemoryBroker()

    def broken(delivery: Delivery) -> None:
        raise RuntimeError("bug in deliver")

    with trio.fail_after(5):
        with pytest.RaisesGroup(pytest.RaisesExc(RuntimeError, match="bug in deliver")):
            async with trio.open_nursery() as nursery:
                healthy = await subscribe(nursery, broker, "t")
                await nursery.start(broker.subscribe, broken)
                await broker.publish_many([("t", b"x")])  # does not raise here
                assert await healthy.message() == Message("t", b"x")
        # the failed subscriber was removed: publishing still works
        await broker.publish_many([("t", b"y")])


async def test_memory_simulated_resubscribe() -> None:
    broker = MemoryBroker()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            inbox = Inbox()
            await nursery.start(broker.subscribe, inbox.deliver)
            broker.simulate_resubscribe()
            assert await inbox._receive.receive() == Resubscribed()
            nursery.cancel_scope.cancel()


async def test_closed_memory_broker_is_unavailable() -> None:
    broker = MemoryBroker()
    await broker.aclose()
    with trio.fail_after(5), pytest.raises(BrokerUnavailable):
        await broker.publish_many([("t", b"x")])


# -- the factory -----------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["http://localhost:6379", "memcached://h:1", "localhost:6379"])
async def test_a_redis_url_of_another_scheme_is_refused(url: str) -> None:
    with pytest.raises(ConfigError, match="NURSERY_REDIS_URL.*redis://"):
        Settings(redis_url=url)


async def test_open_broker_picks_redis_for_a_redis_url() -> None:
    from nursery.pubsub.redis import RedisBroker, RedisPresence

    # Nothing is contacted on entry, so an unreachable URL is fine here.
    settings = Settings(redis_url="rediss://user:secret@127.0.0.1:1/3", broker_timeout=0.5)
    with trio.fail_after(5):
        async with open_broker(settings) as (broker, presence):
            assert isinstance(broker, RedisBroker) and isinstance(presence, RedisPresence)
            assert "secret" not in broker.url
            assert broker.timeout == presence.timeout == 0.5
