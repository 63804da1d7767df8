"""``RedisRateLimiter``: GCRA in Redis, one Lua script (one round trip) per hit.

The script reads Redis's clock (TIME), so instances with skewed clocks still share one
limit. Keys expire when their TAT passes. See ``ratelimit.py`` for the algorithm.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from nursery.pubsub import resp
from nursery.pubsub.ratelimit import Hits, Rate, Verdict
from nursery.pubsub.redis import describe, unavailable_as_broker_error

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
    def __init__(self, url: str, timeout: float, commands: resp.Client) -> None:
        self.url = describe(url)
        self.timeout = timeout
        self._commands = commands

    @classmethod
    @asynccontextmanager
    async def open(cls, url: str, timeout: float) -> AsyncIterator[RedisRateLimiter]:
        async with resp.Client.open(url, timeout=timeout) as commands:
            yield cls(url, timeout, commands)

    async def hit(self, key: str, rate: Rate) -> Verdict:
        allowed, retry_us = await unavailable_as_broker_error(
            "rate limit", self._commands.script(
                _GCRA, [KEY.format(key=key)], [round(rate.interval * 1e6), round(rate.per * 1e6)]
            ),
        )
        return Verdict(bool(allowed), int(retry_us) / 1e6)

    async def charge(self, hits: Hits) -> dict[str, float]:
        over: dict[str, float] = {}
        keys = list(hits)
        for start in range(0, len(keys), CHARGE_BATCH):
            chunk = keys[start:start + CHARGE_BATCH]
            args: list[int | str] = []
            for key in chunk:
                count, rate = hits[key]
                args += [count, round(rate.interval * 1e6), round(rate.per * 1e6)]
            waits = await unavailable_as_broker_error(
                "rate limit charge",
                self._commands.script(_CHARGE, [KEY.format(key=key) for key in chunk], args),
            )
            over.update((key, int(wait_us) / 1e6) for key, wait_us in zip(chunk, waits, strict=True))
        return over
