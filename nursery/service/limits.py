"""Which actions are rate limited, by what key, and what happens when the counters are down.

Limits are ``Rate``s from the settings (e.g. ``10/60s``: ten per minute, bursts included).
Keys: login per account and per client address (brute force), register per client address,
writes per user. Websocket messages per connection are limited in ``service.session`` (no
shared counter needed for one connection).

Writes are the hot path: with a ``write_limiter`` (``ratelimit.local_first``) they are checked in
this process and shared with the other instances in batches, so a user may exceed the limit
across instances by what each lets through in about 50 ms. Logins and registrations always
ask the shared counters.

When the shared counters (Redis) are unreachable: logins and registrations are refused with
503 (the brute-force guard must not vanish with Redis); writes go through (fail open: only
the local limit holds) and every such pass is logged and counted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from nursery.errors import RateLimited, RateLimiterUnavailable, Unavailable
from nursery.ratelimit.gcra import Rate, RateLimiter

log = logging.getLogger(__name__)


def write_key(user_id: str) -> str:
    """The counter of a user's writes; the braces put it in the user's Redis Cluster slot,
    with the user's channel and presence key (one shard holds all of a user's state)."""
    return f"write:user:{{{user_id}}}"


class Limits:
    def __init__(
        self,
        limiter: RateLimiter,
        *,
        login_per_account: Rate,
        login_per_client: Rate,
        register_per_client: Rate,
        writes_per_user: Rate,
        on_limited: Callable[[str], None] = lambda kind: None,
        write_limiter: RateLimiter | None = None,
    ) -> None:
        self._limiter = limiter
        self._write_limiter = write_limiter or limiter
        self._login_account = login_per_account
        self._login_client = login_per_client
        self._register_client = register_per_client
        self._writes = writes_per_user
        self._on_limited = on_limited
        self._failed_open = 0

    @property
    def failed_open(self) -> int:
        """Writes let through without the shared counters."""
        return self._failed_open + getattr(self._write_limiter, "failed_open", 0)

    async def login(self, email: str, client: str) -> None:
        await self._check("login", f"login:client:{client}", self._login_client, fail_open=False)
        await self._check("login", f"login:account:{email}", self._login_account, fail_open=False)

    async def register(self, client: str) -> None:
        await self._check("register", f"register:client:{client}", self._register_client, fail_open=False)

    async def write(self, user_id: str) -> None:
        await self._check(
            "write", write_key(user_id), self._writes, fail_open=True,
            limiter=self._write_limiter,
        )

    async def _check(
        self, kind: str, key: str, rate: Rate, *, fail_open: bool, limiter: RateLimiter | None = None
    ) -> None:
        try:
            verdict = await (limiter or self._limiter).hit(key, rate)
        except RateLimiterUnavailable as exc:
            if not fail_open:
                raise Unavailable("rate limits cannot be checked right now") from exc
            self._failed_open += 1
            log.error("rate limit %s not checked (failing open): %s", kind, exc)
            return
        if not verdict.allowed:
            self._on_limited(kind)
            raise RateLimited(
                f"too many {kind} attempts, try again later", retry_after=verdict.retry_after
            )


