"""``LocalFirstLimiter``: the local limit is exact, the shared one is learnt in batches, and
a lost Redis leaves the local limit standing (the shared backends' own contract is in
test_ratelimit_contract.py)."""

from __future__ import annotations

import pytest
import trio

from nursery.errors import RateLimiterUnavailable
from nursery.ratelimit.gcra import Hits, MemoryRateLimiter, Rate
from nursery.ratelimit.local_first import DEFAULT_PERIOD, LocalFirstLimiter

RATE = Rate(3, 60)  # one hit per 20 s, three at once


async def test_one_instance_alone_never_exceeds_the_limit(autojump_clock: trio.abc.Clock) -> None:
    limiter = LocalFirstLimiter(MemoryRateLimiter())
    verdicts = [await limiter.hit("u1", RATE) for _ in range(5)]
    assert [v.allowed for v in verdicts] == [True, True, True, False, False]
    assert verdicts[3].retry_after == pytest.approx(20)
    assert (await limiter.hit("u2", RATE)).allowed  # keys independent


async def test_other_instances_learn_the_shared_count_within_a_period(
    autojump_clock: trio.abc.Clock,
) -> None:
    shared = MemoryRateLimiter()
    a, b = LocalFirstLimiter(shared), LocalFirstLimiter(shared)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(a.run)
        nursery.start_soon(b.run)
        assert all([(await a.hit("u1", RATE)).allowed for _ in range(3)])
        await trio.sleep(2 * DEFAULT_PERIOD)  # a charged its 3 hits
        # b has not heard yet: its first hit goes through (the bounded excess) ...
        assert (await b.hit("u1", RATE)).allowed
        await trio.sleep(2 * DEFAULT_PERIOD)
        # ... and once it charged it, b refuses until the shared counter allows
        refused = await b.hit("u1", RATE)
        assert not refused.allowed and refused.retry_after == pytest.approx(20, abs=0.5)
        await trio.sleep(refused.retry_after + 2 * DEFAULT_PERIOD)
        assert (await b.hit("u1", RATE)).allowed
        nursery.cancel_scope.cancel()


class Unreachable:
    async def charge(self, hits: Hits) -> dict[str, float]:
        await trio.sleep(0.5)
        raise RateLimiterUnavailable("redis charge failed: timed out")


async def test_without_the_shared_counters_the_local_limit_holds_and_passes_are_counted(
    autojump_clock: trio.abc.Clock,
) -> None:
    limiter = LocalFirstLimiter(Unreachable())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(limiter.run)
        verdicts = [await limiter.hit("u1", RATE) for _ in range(4)]
        assert [v.allowed for v in verdicts] == [True, True, True, False]
        await trio.sleep(1)
        assert limiter.failed_open == 3  # let through, never counted by the other instances
        nursery.cancel_scope.cancel()


async def test_hits_waiting_for_a_charge_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("nursery.ratelimit.local_first.MAX_PENDING", 3)
    limiter = LocalFirstLimiter(MemoryRateLimiter())  # its charging task never runs here
    for user in range(5):
        assert (await limiter.hit(f"u{user}", RATE)).allowed  # the local limit still decides
    assert limiter.failed_open == 2  # two users' hits could not wait for the shared count
