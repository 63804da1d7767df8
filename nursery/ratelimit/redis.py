"""``RedisRateLimiter``: GCRA in Redis, one Lua script (one round trip) per hit.

The script reads Redis's clock (TIME), so instances with skewed clocks still share one
limit. Keys expire when their TAT passes. See ``gcra.py`` for the algorithm. A lost,
unreachable or silent Redis is ``RateLimiterUnavailable`` (the callers fail open or answer 503).

On a Redis Cluster (``cluster=True``) every script call must keep its keys in one slot: a
charge runs one script per slot (all in one pipeline, one round trip per master) instead of
one per ``CHARGE_BATCH`` keys.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from nursery.errors import RateLimiterUnavailable
from nursery.logs import redact
from nursery.ratelimit.gcra import Hits, Rate, Verdict
from nursery.redis import resp
from nursery.redis.resp_cluster import Commands, key_slot, open_redis_client, run_scripts

KEY = "nursery:rate:{key}"

# KEYS[1] the counter; ARGV[1] interval (µs), ARGV[2] per (µs).
# Returns {allowed (0/1), retry_after (µs)}.
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local per = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local ahead = new_tat - now
if ahead > per then
  return {0, ahead - per}
end
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil(ahead / 1000) + 1)
return {1, 0}
"""


# Hits already let through, for many keys at once: KEYS[i] the counter; ARGV[3i-2..3i] its
# hits, interval (µs) and per (µs). Returns, per key, µs until a hit would be allowed.
_CHARGE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {}
for i, key in ipairs(KEYS) do
  local hits = tonumber(ARGV[3 * i - 2])
  local interval = tonumber(ARGV[3 * i - 1])
  local per = tonumber(ARGV[3 * i])
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  tat = tat + hits * interval
  local ahead = tat - now
  redis.call('SET', key, tat, 'PX', math.ceil(ahead / 1000) + 1)
  out[i] = math.max(0, ahead - per)
end
return out
"""
CHARGE_BATCH = 500  # keys per script call


class RedisRateLimiter:
    def __init__(self, url: str, timeout: float, commands: Commands, *, cluster: bool = False) -> None:
        self.url = redact(url)
        self.timeout = timeout
        self._commands = commands
        self._cluster = cluster

    @classmethod
    @asynccontextmanager
    async def open(
        cls, url: str, timeout: float, *, cluster: bool = False
    ) -> AsyncIterator[RedisRateLimiter]:
        """``cluster``: ``url`` names a node of a Redis Cluster."""
        async with open_redis_client(url, timeout=timeout, cluster=cluster) as commands:
            yield cls(url, timeout, commands, cluster=cluster)

    async def hit(self, key: str, rate: Rate) -> Verdict:
        allowed, retry_us = await resp.translated(
            self._commands.script(
                _GCRA, [KEY.format(key=key)], [round(rate.interval * 1e6), round(rate.per * 1e6)]
            ),
            RateLimiterUnavailable, "rate limit",
        )
        return Verdict(bool(allowed), int(retry_us) / 1e6)

    async def charge(self, hits: Hits) -> dict[str, float]:
        batches = self._batches(list(hits))
        calls: list[tuple[list[str], list[int | str]]] = []
        for batch in batches:
            args: list[int | str] = []
            for key in batch:
                count, rate = hits[key]
                args += [count, round(rate.interval * 1e6), round(rate.per * 1e6)]
            calls.append(([KEY.format(key=key) for key in batch], args))
        replies = await resp.translated(
            run_scripts(self._commands, _CHARGE, calls), RateLimiterUnavailable, "rate limit charge")
        refused = next((r for r in replies if isinstance(r, resp.ReplyError)), None)
        if refused is not None:
            raise RateLimiterUnavailable(f"redis rate limit charge failed: {refused}")
        over: dict[str, float] = {}
        for batch, waits in zip(batches, replies, strict=True):
            over.update((key, int(wait_us) / 1e6) for key, wait_us in zip(batch, waits, strict=True))
        return over

    def _batches(self, keys: list[str]) -> list[list[str]]:
        """``keys`` in script calls of at most ``CHARGE_BATCH``; on a cluster, of one slot each."""
        groups: dict[int, list[str]] = {}
        for key in keys:
            groups.setdefault(key_slot(KEY.format(key=key)) if self._cluster else 0, []).append(key)
        return [group[start:start + CHARGE_BATCH]
                for group in groups.values() for start in range(0, len(group), CHARGE_BATCH)]
