"""``RedisRateLimiter``: GCRA in Redis, one Lua script (one round trip) per hit.

The script reads Redis's clock (TIME), so instances with skewed clocks still share one
limit. Keys expire when their TAT passes. See ``ratelimit.py`` for the algorithm.
"""

from __future__ import annotations

from nursery.pubsub.ratelimit import Rate, Verdict
from nursery.pubsub.redis import _aclose_client, _call, _command_client, _require_loop, describe

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


class RedisRateLimiter:
    def __init__(self, url: str, timeout: float, *, max_connections: int = 16) -> None:
        _require_loop()
        self.url = describe(url)
        self.timeout = timeout
        self._client = _command_client(url, timeout, max_connections)
        self._script = self._client.register_script(_GCRA)

    async def hit(self, key: str, rate: Rate) -> Verdict:
        allowed, retry_us = await _call(
            self.timeout,
            "rate limit",
            self._script,
            [KEY.format(key=key)],
            [round(rate.interval * 1e6), round(rate.per * 1e6)],
        )
        return Verdict(bool(allowed), int(retry_us) / 1e6)

    async def aclose(self) -> None:
        await _aclose_client(self._client, self.timeout)

