"""Rate limits shared by every instance: GCRA, in this process or in Redis.

    gcra          the algorithm, the interfaces and ``MemoryRateLimiter`` (one process)
    redis         ``RedisRateLimiter``: one Lua script per hit, Redis's own clock
    local_first   ``LocalFirstLimiter``: decides in this process, charges Redis in batches

``open_rate_limiter(settings)`` picks the backend by ``settings.redis_url``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from nursery.config import Settings
from nursery.ratelimit.gcra import MemoryRateLimiter as MemoryRateLimiter
from nursery.ratelimit.gcra import Rate as Rate
from nursery.ratelimit.gcra import RateLimiter as RateLimiter
from nursery.ratelimit.gcra import SharedRateLimiter as SharedRateLimiter
from nursery.ratelimit.gcra import Verdict as Verdict


@asynccontextmanager
async def open_rate_limiter(settings: Settings) -> AsyncIterator[SharedRateLimiter]:
    """Shared counters in Redis when ``settings.redis_url`` is set (a Redis Cluster when
    ``settings.redis_cluster``), else in this process."""
    if not settings.redis_url:
        memory = MemoryRateLimiter()
        try:
            yield memory
        finally:
            await memory.aclose()
        return
    from nursery.ratelimit.redis import RedisRateLimiter

    async with RedisRateLimiter.open(
        settings.redis_url, settings.broker_timeout, cluster=settings.redis_cluster
    ) as limiter:
        yield limiter
