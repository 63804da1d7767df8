"""One contract for every rate-limiter backend (memory, redis, a 3-master Redis Cluster):
GCRA semantics, shared counters across instances, keys independent, and refusal carrying a
usable Retry-After."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager

import pytest
import trio

from nursery.config import Settings
from nursery.errors import RateLimiterUnavailable
from nursery.ratelimit import MemoryRateLimiter, Rate, SharedRateLimiter, open_rate_limiter
from nursery.ratelimit.gcra import gcra

OpenLimiters = Callable[[int], AbstractAsyncContextManager[list[SharedRateLimiter]]]


@asynccontextmanager
async def _memory(n: int) -> AsyncIterator[list[SharedRateLimiter]]:
    async with open_rate_limiter(Settings()) as limiter:
        assert isinstance(limiter, MemoryRateLimiter)
        yield [limiter] * n  # one process: every "instance" shares it


def _redis(url: str, cluster: bool = False) -> OpenLimiters:
    @asynccontextmanager
    async def open_limiters(n: int) -> AsyncIterator[list[SharedRateLimiter]]:
        async with AsyncExitStack() as stack:
            settings = Settings(redis_url=url, redis_cluster=cluster, broker_timeout=2.0)
            yield [await stack.enter_async_context(open_rate_limiter(settings)) for _ in range(n)]

    return open_limiters


@pytest.fixture(params=["memory", "redis", "redis-cluster"])
def limiters(request: pytest.FixtureRequest) -> OpenLimiters:
    if request.param == "memory":
        return _memory
    if request.param == "redis-cluster":
        return _redis(request.getfixturevalue("redis_cluster_url"), cluster=True)
    return _redis(request.getfixturevalue("redis_url"))


async def test_the_n_plus_first_hit_in_the_window_is_refused_on_any_instance(limiters: OpenLimiters) -> None:
    with trio.fail_after(10):
        async with limiters(3) as instances:
            rate = Rate(5, 60)
            verdicts = [await instances[i % 3].hit("login:a@b.io", rate) for i in range(5)]
            assert all(v.allowed for v in verdicts)
            refused = await instances[1].hit("login:a@b.io", rate)
            assert not refused.allowed
            assert 0 < refused.retry_after <= 12 + 0.5  # one interval (60/5) until the next hit
            assert (await instances[2].hit("login:other@b.io", rate)).allowed  # keys independent


async def test_capacity_returns_after_the_interval(limiters: OpenLimiters) -> None:
    with trio.fail_after(10):
        async with limiters(2) as (a, b):
            rate = Rate(2, 0.4)  # one hit back every 0.2 s
            assert (await a.hit("k", rate)).allowed and (await b.hit("k", rate)).allowed
            refused = await a.hit("k", rate)
            assert not refused.allowed
            await trio.sleep(refused.retry_after + 0.05)
            assert (await b.hit("k", rate)).allowed


async def test_charged_hits_count_past_the_limit_and_say_how_long_to_wait(limiters: OpenLimiters) -> None:
    with trio.fail_after(10):
        async with limiters(2) as (a, b):
            rate = Rate(4, 60)  # one hit per 15 s
            assert await a.charge({"w:u1": (3, rate), "w:u2": (1, rate)}) == {"w:u1": 0.0, "w:u2": 0.0}
            waits = await b.charge({"w:u1": (3, rate)})  # 6 let through: 2 past the limit
            assert waits["w:u1"] == pytest.approx(30, abs=0.5)
            refused = await b.hit("w:u1", rate)  # the shared counter is the same one
            assert not refused.allowed and refused.retry_after == pytest.approx(45, abs=0.5)
            assert (await a.hit("w:u2", rate)).allowed


async def test_a_charge_of_many_keys_counts_each_of_them(limiters: OpenLimiters) -> None:
    with trio.fail_after(10):
        async with limiters(2) as (a, b):
            rate = Rate(4, 60)  # one hit per 15 s
            keys = [f"w:many:{i}" for i in range(1200)]  # several script calls; every shard
            assert await a.charge({key: (4, rate) for key in keys}) == dict.fromkeys(keys, 0.0)
            waits = await b.charge({key: (1, rate) for key in keys})  # one past the limit
            assert waits.keys() == set(keys)
            assert all(wait == pytest.approx(15, abs=0.5) for wait in waits.values())


def test_gcra_steps() -> None:
    rate = Rate(3, 3.0)
    tat = None
    for now in (0.0, 0.0, 0.0):
        verdict, tat = gcra(tat, now, rate)
        assert verdict.allowed
    verdict, kept = gcra(tat, 0.0, rate)
    assert not verdict.allowed and kept is None and verdict.retry_after == pytest.approx(1.0)
    verdict, _ = gcra(tat, 1.0, rate)
    assert verdict.allowed


async def test_redis_limiter_outage_raises_rate_limiter_unavailable(own_redis: object) -> None:
    with trio.fail_after(15):
        settings = Settings(redis_url=own_redis.url, broker_timeout=1.0)  # type: ignore[attr-defined]
        async with open_rate_limiter(settings) as limiter:
            assert (await limiter.hit("k", Rate(10, 1))).allowed
            own_redis.stop()  # type: ignore[attr-defined]
            with pytest.raises(RateLimiterUnavailable):
                await limiter.hit("k", Rate(10, 1))
            own_redis.start()  # type: ignore[attr-defined]
            assert (await limiter.hit("k", Rate(10, 1))).allowed
