"""The Redis broker and presence: redis.asyncio driven from Trio through trio-asyncio.

Only this module (and ``stores/``) knows asyncio exists. Every call crosses the bridge once
(``aio_as_trio``, ~60 µs) and runs under a Trio deadline of ``timeout`` seconds; redis-py's and
the OS's errors come out as ``BrokerUnavailable``. A trio-asyncio loop must be open around the
whole lifetime of these objects (``server.py`` opens it once per process).

Resource handling: ``RedisBroker`` owns two connection pools, one for PUBLISH (shared by
concurrent publishers, bounded) and one for the subscriber's connection; ``RedisPresence`` owns
one. ``aclose()`` closes them; the owner must first cancel ``subscribe`` (its task lives in the
caller's nursery), so the reader is always gone before its client is closed.
"""

from __future__ import annotations

import logging
import math
import random
import secrets
import time
from collections.abc import Awaitable, Callable, Collection, Iterator, Sequence
from typing import Any, NoReturn, TypeVar
from urllib.parse import urlsplit

import redis.asyncio as aioredis
import trio
import trio_asyncio
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from nursery.errors import BrokerUnavailable
from nursery.pubsub.broker import CHANNEL, Deliver, Message, Resubscribed

log = logging.getLogger(__name__)

T = TypeVar("T")

# What a lost or unreachable server looks like from here. Anything else is a bug: re-raised.
RECOVERABLE: tuple[type[BaseException], ...] = (RedisError, OSError, trio.TooSlowError)

PRESENCE_KEY = "nursery:presence:{user_id}"
_PING = b"nursery-ping"
# Messages handed over per bridge crossing when the channel is busy.
_BATCH = 128


class _Silent(Exception):
    """The subscriber connection stopped answering PING (half-open TCP, paused server)."""


def describe(url: str) -> str:
    """The URL without credentials, for logs and errors."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}{parts.path}"


def _require_loop() -> None:
    if trio_asyncio.current_loop.get() is None:
        raise RuntimeError(
            "the Redis broker needs a trio-asyncio loop: run inside "
            "`async with trio_asyncio.open_loop():` (server.py does this once per process)"
        )


def backoff_delays(first: float = 0.05, cap: float = 2.0) -> Iterator[float]:
    """Exponential backoff with jitter: ``first`` doubling up to ``cap``, each delay drawn
    from its upper half so that instances that lost Redis together do not return together."""
    delay = first
    while True:
        yield random.uniform(delay / 2, delay)
        delay = min(cap, delay * 2)


def _reason(exc: BaseException) -> str:
    """A short, credential-free account of a failure, for logs and error messages."""
    if isinstance(exc, trio.TooSlowError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}"


async def _call(timeout: float, what: str, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """One bridge crossing under a Trio deadline; failures become ``BrokerUnavailable``.
    Cancellation cancels the asyncio side, whose connection redis-py then discards."""
    try:
        with trio.fail_after(timeout):
            result: T = await trio_asyncio.aio_as_trio(fn)(*args)
            return result
    except RECOVERABLE as exc:
        raise BrokerUnavailable(f"redis {what} failed: {_reason(exc)}") from exc


def _command_client(url: str, timeout: float, max_connections: int) -> aioredis.Redis:
    """A client for plain commands over a bounded pool (callers wait for a free connection).

    The Trio deadline in ``_call`` is the only timeout on commands: redis-py's own
    (``socket_timeout``, the pool's wait) would add asyncio timers at ~35 µs each through
    the bridge, two or three per command, and a Trio cancellation makes redis-py drop the
    connection it interrupted anyway. Connecting keeps its own timeout.
    One quick retry on a connection error lets the first command after a Redis restart go
    out on a fresh connection instead of failing on a stale pooled one (so a PUBLISH may
    at worst arrive twice; subscribers dedupe by revision). Timeouts are never retried.
    """
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=None,
        socket_timeout=None,
        socket_connect_timeout=timeout,
        socket_keepalive=True,
        retry=Retry(NoBackoff(), 1, (RedisConnectionError,)),
    )
    return aioredis.Redis.from_pool(pool)


async def _aclose_client(client: aioredis.Redis, timeout: float) -> None:
    # Shielded so that closing still happens while the owner is being cancelled; bounded so
    # that a stuck server cannot hold shutdown.
    with trio.move_on_after(timeout, shield=True):
        try:
            await trio_asyncio.aio_as_trio(client.aclose)()
        except RECOVERABLE as exc:
            log.debug("closing a redis client: %r", exc)


class RedisBroker:
    """PUBLISH / SUBSCRIBE on ``CHANNEL``.

    ``timeout`` bounds every network wait; ``ping_interval`` is how long the subscriber's
    connection may be quiet before it sends a PING: one unanswered for ``timeout`` seconds
    means a dead connection (noticed within ``ping_interval + timeout``).
    ``reconnects`` counts lost subscriber connections; ``connected`` is whether the
    subscription is live right now (for readiness and metrics).
    """

    def __init__(
        self,
        url: str,
        timeout: float,
        *,
        ping_interval: float = 1.0,
        max_connections: int = 32,
    ) -> None:
        _require_loop()
        self.url = describe(url)
        self.timeout = timeout
        self.ping_interval = ping_interval
        self.reconnects = 0
        self.connected = False
        self._client = _command_client(url, timeout, max_connections)
        # Subscribing: redis-py must never reconnect and resubscribe behind our back, or
        # the loss would go unnoticed and no Resubscribed would reach the hub.
        self._sub_client = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            socket_keepalive=True,
            retry=Retry(NoBackoff(), 0, ()),
        )

    async def publish(self, payload: bytes) -> None:
        """PUBLISH, within ``timeout``; ``BrokerUnavailable`` when Redis is unreachable.
        A publish cancelled halfway may or may not have been delivered."""
        await _call(self.timeout, "PUBLISH", self._client.publish, CHANNEL, payload)

    async def publish_many(self, payloads: Sequence[bytes]) -> None:
        """Every payload in one pipeline: one round trip and one bridge crossing. (One alone
        goes as a plain PUBLISH: redis-py's pipeline costs more CPU than the command.)"""
        if len(payloads) == 1:
            await self.publish(payloads[0])
        elif payloads:
            await _call(self.timeout, "PUBLISH", _publish_many, self._client, list(payloads))

    async def subscribe(
        self, deliver: Deliver, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Run the subscription until cancelled; the caller's nursery owns this task.

        ``task_status.started()`` once the first SUBSCRIBE is confirmed; if that does not
        happen within ``timeout`` (retrying with backoff), raises ``BrokerUnavailable`` so
        that startup fails loudly. Afterwards a lost connection is logged, counted in
        ``reconnects`` and retried forever with jittered backoff (0.05 s doubling to 2 s);
        once subscribed again, ``deliver(Resubscribed())`` precedes any new message.

        ``deliver`` runs in this task; an exception from it ends the subscription (re-raised).
        On cancellation the pub/sub connection is closed (shielded, bounded by ``timeout``).
        """
        started = False
        deadline = trio.current_time() + self.timeout
        delays = backoff_delays()
        lost_at: float | None = None
        attempts = 0
        while True:
            try:
                async with self._subscription() as pubsub:
                    self.connected = True
                    if not started:
                        started = True
                        log.info("subscribed to %s on %s", CHANNEL, self.url)
                        task_status.started()
                    else:
                        assert lost_at is not None
                        log.warning(
                            "resubscribed to %s on %s after %.2f s (%d attempts); "
                            "messages in between may be lost",
                            CHANNEL, self.url, trio.current_time() - lost_at, attempts,
                        )
                        deliver(Resubscribed())
                    delays, lost_at, attempts = backoff_delays(), None, 0
                    await self._read(pubsub, deliver)
            except RECOVERABLE + (_Silent,) as exc:
                self.connected = False
                attempts += 1
                if not started:
                    if trio.current_time() >= deadline:
                        raise BrokerUnavailable(
                            f"cannot subscribe on {self.url}: {_reason(exc)}"
                        ) from exc
                elif lost_at is None:
                    lost_at = trio.current_time()
                    self.reconnects += 1
                    log.warning(
                        "lost the subscription on %s: %s; reconnecting", self.url, _reason(exc)
                    )
                else:
                    log.info("still cannot resubscribe on %s: %s", self.url, _reason(exc))
            finally:
                self.connected = False
            await trio.sleep(next(delays))

    def _subscription(self) -> _Subscription:
        return _Subscription(self._sub_client.pubsub(), self.timeout)

    async def _read(self, pubsub: PubSub, deliver: Deliver) -> NoReturn:
        """Hand messages to ``deliver`` until the connection fails or falls silent."""
        heard = pinged = trio.current_time()
        while True:
            now = trio.current_time()
            if now - heard > self.ping_interval + self.timeout:
                raise _Silent(f"no answer to PING for {now - heard:.1f} s")
            # Ping only a quiet connection: traffic already proves it is alive.
            ping = now - max(heard, pinged) >= self.ping_interval
            if ping:
                pinged = now
            with trio.fail_after(self.ping_interval + self.timeout):
                messages = await trio_asyncio.aio_as_trio(_poll)(pubsub, ping, self.ping_interval)
            if messages:
                heard = trio.current_time()
            for message in messages:
                if message["type"] == "message":
                    deliver(Message(message["data"]))

    async def aclose(self) -> None:
        """Close both pools (cancel ``subscribe`` first). Shielded, bounded by ``timeout``."""
        await _aclose_client(self._client, self.timeout)
        await _aclose_client(self._sub_client, self.timeout)


class _Subscription:
    """A PubSub with its SUBSCRIBE confirmed on entry and its connection closed on exit,
    also when cancelled (shielded, bounded)."""

    def __init__(self, pubsub: PubSub, timeout: float) -> None:
        self.pubsub = pubsub
        self.timeout = timeout

    async def __aenter__(self) -> PubSub:
        try:
            with trio.fail_after(self.timeout):
                await trio_asyncio.aio_as_trio(_subscribe)(self.pubsub)
        except BaseException:
            await self._close()
            raise
        return self.pubsub

    async def __aexit__(self, *exc_info: object) -> None:
        await self._close()

    async def _close(self) -> None:
        with trio.move_on_after(self.timeout, shield=True):
            try:
                await trio_asyncio.aio_as_trio(self.pubsub.aclose)()
            except RECOVERABLE as exc:
                log.debug("closing the pub/sub connection: %r", exc)


# The asyncio side: each function below is one bridge crossing.


async def _publish_many(client: aioredis.Redis, payloads: list[bytes]) -> None:
    pipe = client.pipeline(transaction=False)
    for payload in payloads:
        pipe.publish(CHANNEL, payload)
    await pipe.execute()


async def _subscribe(pubsub: PubSub) -> None:
    await pubsub.subscribe(CHANNEL)
    while True:
        # Blocks; the Trio side bounds it.
        reply = await pubsub.get_message(timeout=None)
        if reply is not None and reply["type"] == "subscribe":
            return


async def _poll(pubsub: PubSub, ping: bool, wait: float) -> list[dict[str, Any]]:
    """Optionally PING, wait up to ``wait`` s for a message, then take what is buffered."""
    if ping:
        await pubsub.ping(_PING)
    first = await pubsub.get_message(timeout=wait)
    if first is None:
        return []
    messages = [first]
    while len(messages) < _BATCH:
        # timeout=0 returns what is already buffered without waiting for the network.
        more = await pubsub.get_message(timeout=0)
        if more is None:
            break
        messages.append(more)
    return messages


class RedisPresence:
    """Presence in Redis: one sorted set per user (``nursery:presence:{user_id}``), member
    ``"{session_id}|{instance_id}"``, score = expiry as unix time. Entries of a crashed
    instance stop counting after ``ttl`` and the key itself expires after ``2 × ttl``
    without refreshes. Expiry uses each instance's wall clock: keep clocks in sync (NTP).
    """

    def __init__(
        self,
        url: str,
        timeout: float,
        *,
        instance_id: str | None = None,
        max_connections: int = 8,
    ) -> None:
        _require_loop()
        self.url = describe(url)
        self.timeout = timeout
        self.instance_id = instance_id or secrets.token_hex(8)
        self._client = _command_client(url, timeout, max_connections)

    async def refresh(self, entries: dict[str, set[str]], ttl: float) -> None:
        """Every entry in one pipeline (one round trip)."""
        if not any(entries.values()):
            await trio.lowlevel.checkpoint()
            return
        await _call(
            self.timeout, "presence refresh", _refresh, self._client, entries, ttl,
            self.instance_id,
        )

    async def remove(self, user_id: str, session_id: str) -> None:
        await _call(
            self.timeout, "presence remove", self._client.zrem,
            PRESENCE_KEY.format(user_id=user_id), f"{session_id}|{self.instance_id}",
        )

    async def online(self, user_id: str) -> set[str]:
        return (await self.online_many([user_id]))[user_id]

    async def online_many(self, user_ids: Collection[str]) -> dict[str, set[str]]:
        return await _call(self.timeout, "presence read", _online, self._client, list(user_ids))

    async def aclose(self) -> None:
        await _aclose_client(self._client, self.timeout)


async def _refresh(
    client: aioredis.Redis, entries: dict[str, set[str]], ttl: float, instance_id: str
) -> None:
    expires = time.time() + ttl
    keep_ms = math.ceil(2 * ttl * 1000)
    pipe = client.pipeline(transaction=False)
    for user_id, sessions in entries.items():
        if sessions:
            key = PRESENCE_KEY.format(user_id=user_id)
            pipe.zadd(key, {f"{session_id}|{instance_id}": expires for session_id in sessions})
            pipe.pexpire(key, keep_ms)
    await pipe.execute()


async def _online(client: aioredis.Redis, user_ids: list[str]) -> dict[str, set[str]]:
    now = time.time()
    pipe = client.pipeline(transaction=False)
    for user_id in user_ids:
        key = PRESENCE_KEY.format(user_id=user_id)
        pipe.zremrangebyscore(key, "-inf", f"({now!r}")  # stale entries of crashed instances
        pipe.zrangebyscore(key, repr(now), "+inf")
    replies = await pipe.execute()
    return {
        user_id: {member.rsplit(b"|", 1)[0].decode() for member in members}
        for user_id, members in zip(user_ids, replies[1::2], strict=True)
    }
