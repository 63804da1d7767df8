"""The Redis broker and presence, on ``resp`` (a small Redis client on Trio: no asyncio).

Every command is bounded by ``timeout`` seconds (``resp``'s deadline); what a lost,
unreachable or silent Redis raises comes out as ``BrokerUnavailable``
(``unavailable_as_broker_error``, the one place).

Resource handling: ``RedisBroker`` owns a command client (PUBLISH, pipelined) and, while
``subscribe`` runs, the subscriber's connection; ``RedisPresence`` owns a command client. Both
are made by ``open`` context managers, which close them; the owner cancels ``subscribe`` (its
task lives in the caller's nursery) before leaving them.
"""

from __future__ import annotations

import logging
import math
import random
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Collection, Iterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, NoReturn
from urllib.parse import urlsplit

import trio

from nursery.errors import BrokerUnavailable
from nursery.pubsub import resp
from nursery.pubsub.broker import CHANNEL, Deliver, Message, Resubscribed

log = logging.getLogger(__name__)

# What a lost or unreachable server looks like from here. Anything else is a bug: re-raised.
RECOVERABLE: tuple[type[BaseException], ...] = (resp.RedisError, OSError, trio.TooSlowError)

PRESENCE_KEY = "nursery:presence:{user_id}"


class _Silent(Exception):
    """The subscriber connection stopped answering PING (half-open TCP, paused server)."""


def describe(url: str) -> str:
    """The URL without credentials, for logs and errors."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}{parts.path}"


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


async def unavailable_as_broker_error[T](what: str, call: Awaitable[T]) -> T:
    """``call`` (bounded by the client's own timeout); a lost, unreachable or silent Redis
    becomes ``BrokerUnavailable``."""
    try:
        return await call
    except RECOVERABLE as exc:
        raise BrokerUnavailable(f"redis {what} failed: {_reason(exc)}") from exc


class RedisBroker:
    """PUBLISH / SUBSCRIBE on ``CHANNEL``.

    ``timeout`` bounds every network wait; ``ping_interval`` is how long the subscriber's
    connection may be quiet before it sends a PING: one unanswered for ``timeout`` seconds
    means a dead connection (noticed within ``ping_interval + timeout``).
    ``reconnects`` counts lost subscriber connections; ``connected`` is whether the
    subscription is live right now (for readiness and metrics).
    """

    def __init__(self, url: str, timeout: float, commands: resp.Client, *,
                 ping_interval: float = 1.0) -> None:
        self._url = url
        self.url = describe(url)
        self.timeout = timeout
        self.ping_interval = ping_interval
        self.reconnects = 0
        self.connected = False
        self._commands = commands

    @classmethod
    @asynccontextmanager
    async def open(cls, url: str, timeout: float) -> AsyncIterator[RedisBroker]:
        async with resp.Client.open(url, timeout=timeout) as commands:
            yield cls(url, timeout, commands)

    async def publish(self, payload: bytes) -> None:
        """PUBLISH, within ``timeout``; ``BrokerUnavailable`` when Redis is unreachable.
        A publish cancelled halfway may or may not have been delivered."""
        await unavailable_as_broker_error("PUBLISH", self._commands.call("PUBLISH", CHANNEL, payload))

    async def publish_many(self, payloads: Sequence[bytes]) -> None:
        """Every payload in one pipeline: one write, one round trip."""
        if payloads:
            commands = [("PUBLISH", CHANNEL, payload) for payload in payloads]
            await unavailable_as_broker_error("PUBLISH", self._commands.pipeline(commands))

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
        On cancellation the subscription's connection is closed.
        """
        started = False
        deadline = trio.current_time() + self.timeout
        delays = backoff_delays()
        lost_at: float | None = None
        attempts = 0
        while True:
            try:
                async with resp.Subscriber.open(
                    self._url, [CHANNEL.encode()], timeout=self.timeout
                ) as subscriber:
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
                    await self._read(subscriber, deliver)
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

    async def _read(self, subscriber: resp.Subscriber, deliver: Deliver) -> NoReturn:
        """Hand messages to ``deliver`` until the connection fails or falls silent."""
        while True:
            with trio.move_on_after(self.ping_interval) as quiet:
                messages = await subscriber.messages()
            if quiet.cancelled_caught:  # ping a quiet connection: traffic proves it alive
                await subscriber.ping()
                with trio.move_on_after(self.timeout) as unanswered:
                    messages = await subscriber.messages()
                if unanswered.cancelled_caught:
                    raise _Silent(f"no answer to PING for {self.timeout:.1f} s")
            for _, payload in messages:
                deliver(Message(payload))


class RedisPresence:
    """Presence in Redis: one sorted set per user (``nursery:presence:{user_id}``), member
    ``"{session_id}|{instance_id}"``, score = expiry as unix time. Entries of a crashed
    instance stop counting after ``ttl`` and the key itself expires after ``2 × ttl``
    without refreshes. Expiry uses each instance's wall clock: keep clocks in sync (NTP).
    """

    def __init__(self, url: str, timeout: float, commands: resp.Client, *,
                 instance_id: str | None = None) -> None:
        self.url = describe(url)
        self.timeout = timeout
        self.instance_id = instance_id or secrets.token_hex(8)
        self._commands = commands

    @classmethod
    @asynccontextmanager
    async def open(cls, url: str, timeout: float) -> AsyncIterator[RedisPresence]:
        async with resp.Client.open(url, timeout=timeout) as commands:
            yield cls(url, timeout, commands)

    async def refresh(self, entries: dict[str, set[str]], ttl: float) -> None:
        """Every entry in one pipeline (one round trip)."""
        expires = time.time() + ttl
        keep_ms = math.ceil(2 * ttl * 1000)
        commands: list[resp.Command] = []
        for user_id, sessions in entries.items():
            if sessions:
                key = PRESENCE_KEY.format(user_id=user_id)
                members = [x for s in sessions for x in (repr(expires), f"{s}|{self.instance_id}")]
                commands += [("ZADD", key, *members), ("PEXPIRE", key, keep_ms)]
        if not commands:
            await trio.lowlevel.checkpoint()
            return
        await self._run("presence refresh", commands)

    async def remove(self, user_id: str, session_id: str) -> None:
        key = PRESENCE_KEY.format(user_id=user_id)
        await self._run("presence remove", [("ZREM", key, f"{session_id}|{self.instance_id}")])

    async def online(self, user_id: str) -> set[str]:
        return (await self.online_many([user_id]))[user_id]

    async def online_many(self, user_ids: Collection[str]) -> dict[str, set[str]]:
        users = list(user_ids)
        now = repr(time.time())
        commands: list[resp.Command] = []
        for user_id in users:
            key = PRESENCE_KEY.format(user_id=user_id)
            commands += [("ZREMRANGEBYSCORE", key, "-inf", f"({now}"),  # crashed instances'
                         ("ZRANGEBYSCORE", key, now, "+inf")]
        replies = await self._run("presence read", commands)
        return {
            user_id: {member.rsplit(b"|", 1)[0].decode() for member in members}
            for user_id, members in zip(users, replies[1::2], strict=True)
        }

    async def _run(self, what: str, commands: list[resp.Command]) -> list[Any]:
        replies = await unavailable_as_broker_error(what, self._commands.pipeline(commands))
        refused = next((r for r in replies if isinstance(r, resp.ReplyError)), None)
        if refused is not None:
            raise BrokerUnavailable(f"redis {what} failed: {refused}")
        return replies
