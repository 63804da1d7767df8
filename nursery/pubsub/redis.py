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
from nursery.pubsub.broker import EVERYONE, Deliver, Followed, Message, Resubscribed

log = logging.getLogger(__name__)

# What a lost or unreachable server looks like from here. Anything else is a bug: re-raised.
RECOVERABLE: tuple[type[BaseException], ...] = (resp.RedisError, OSError, trio.TooSlowError)

PRESENCE_KEY = "nursery:presence:{{{user_id}}}"  # braces: the user's slot in a cluster
SUBSCRIBE_BATCH = 1000  # channels per SUBSCRIBE or UNSUBSCRIBE


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


def channel(topic: str) -> bytes:
    """The Redis channel of a topic. A user's is ``nursery:u:{<id>}``: the braces make its
    slot the user's, as for its presence key, in a Redis Cluster."""
    return b"nursery:*" if topic == EVERYONE else f"nursery:u:{{{topic}}}".encode()


def topic_of(name: bytes) -> str:
    return EVERYONE if name == b"nursery:*" else name[11:-1].decode()


class RedisBroker:
    """PUBLISH / SUBSCRIBE, a channel per followed topic (``channel``).

    The subscription's task keeps the subscribed channels equal to the followed topics: what
    ``follow`` and ``unfollow`` change is sent in batches (``SUBSCRIBE_BATCH`` channels a
    command), so a storm of new sockets is a few round trips, not one each.

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
        self._wanted: set[bytes] = {channel(EVERYONE)}  # what the hub follows
        self._asked: set[bytes] = set()  # what this connection asked to be subscribed to
        # A channel is heard once Redis confirmed our last request about it: subscribe and
        # unsubscribe requests may cross their confirmations, so each channel counts the
        # requests still unanswered, and only the answer to the last one counts.
        self._unanswered: dict[bytes, int] = {}
        self._heard: set[bytes] = set()
        self._listening: trio.CancelScope | None = None  # cancelled to apply changes at once

    @classmethod
    @asynccontextmanager
    async def open(cls, url: str, timeout: float) -> AsyncIterator[RedisBroker]:
        async with resp.Client.open(url, timeout=timeout) as commands:
            yield cls(url, timeout, commands)

    async def publish_many(self, messages: Sequence[tuple[str, bytes]]) -> None:
        """Every message in one pipeline: one write, one round trip."""
        if messages:
            commands = [("PUBLISH", channel(topic), payload) for topic, payload in messages]
            await unavailable_as_broker_error("PUBLISH", self._commands.pipeline(commands))

    def follow(self, topic: str) -> None:
        self._wanted.add(channel(topic))
        self._apply_soon()

    def unfollow(self, topic: str) -> None:
        if topic != EVERYONE:
            self._wanted.discard(channel(topic))
            self._apply_soon()

    def following(self, topic: str) -> bool:
        return self.connected and channel(topic) in self._heard

    def _apply_soon(self) -> None:
        if self._listening is not None:
            self._listening.cancel()

    async def subscribe(
        self, deliver: Deliver, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Run the subscription until cancelled; the caller's nursery owns this task.

        ``task_status.started()`` once every followed channel is confirmed; if that does not
        happen within ``timeout`` (retrying with backoff), raises ``BrokerUnavailable`` so
        that startup fails loudly. Afterwards a lost connection is logged, counted in
        ``reconnects`` and retried forever with jittered backoff (0.05 s doubling to 2 s);
        once every followed channel is confirmed again, ``deliver(Resubscribed())`` precedes
        any new message. New follows are confirmed with ``Followed``.

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
                async with resp.Subscriber.open(self._url, [], timeout=self.timeout) as subscriber:
                    self._asked, self._heard, self._unanswered = set(), set(), {}
                    await self._resubscribe(subscriber, deliver)
                    self.connected = True
                    if not started:
                        started = True
                        log.info("subscribed on %s", self.url)
                        task_status.started()
                    else:
                        assert lost_at is not None
                        log.warning(
                            "resubscribed on %s after %.2f s (%d attempts); messages in "
                            "between may be lost", self.url, trio.current_time() - lost_at, attempts,
                        )
                        deliver(Resubscribed())
                    delays, lost_at, attempts = backoff_delays(), None, 0
                    await self._listen(subscriber, deliver)
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
                self._listening = None
            await trio.sleep(next(delays))

    async def _resubscribe(self, subscriber: resp.Subscriber, deliver: Deliver) -> None:
        """Subscribe a new connection to everything followed; return once Redis confirmed
        it all (messages arriving meanwhile are delivered)."""
        with trio.fail_after(self.timeout):
            while True:
                await self._apply(subscriber)
                if not self._unanswered:
                    return
                for name, payload in await subscriber.messages():
                    deliver(Message(topic_of(name), payload))
                self._confirmed(subscriber)

    async def _apply(self, subscriber: resp.Subscriber) -> None:
        """Bring the connection's subscriptions to what is followed, in batches."""
        add, drop = sorted(self._wanted - self._asked), sorted(self._asked - self._wanted)
        for names, request in ((add, subscriber.subscribe), (drop, subscriber.unsubscribe)):
            for start in range(0, len(names), SUBSCRIBE_BATCH):
                batch = names[start:start + SUBSCRIBE_BATCH]
                for name in batch:
                    self._unanswered[name] = self._unanswered.get(name, 0) + 1
                    self._heard.discard(name)  # until Redis answers this request
                await request(batch)
        self._asked = set(self._wanted)

    def _confirmed(self, subscriber: resp.Subscriber) -> set[bytes]:
        """Account Redis's answers; the channels that became heard."""
        newly = set()
        for name, subscribed in subscriber.confirmations():
            left = self._unanswered.get(name, 0) - 1
            if left > 0:
                self._unanswered[name] = left
                continue
            self._unanswered.pop(name, None)
            if subscribed and name in self._asked:
                self._heard.add(name)
                newly.add(name)
        return newly

    async def _listen(self, subscriber: resp.Subscriber, deliver: Deliver) -> NoReturn:
        """Hand messages to ``deliver`` until the connection fails or falls silent; apply
        follows and unfollows as they come; confirm new channels with ``Followed``."""
        pinged_at: float | None = None
        while True:
            if self._wanted != self._asked:
                await self._apply(subscriber)
            due = pinged_at + self.timeout if pinged_at is not None else \
                trio.current_time() + self.ping_interval
            messages: list[tuple[bytes, bytes]] | None = None
            with trio.CancelScope(deadline=due) as self._listening:
                messages = await subscriber.messages()
            self._listening = None
            if messages is not None:
                pinged_at = None  # anything heard proves the connection alive
                for name, payload in messages:
                    deliver(Message(topic_of(name), payload))
                newly = self._confirmed(subscriber)
                if newly:
                    deliver(Followed(frozenset(topic_of(name) for name in newly)))
            elif self._wanted != self._asked:
                continue  # woken to apply a follow
            elif pinged_at is None:  # quiet: ping (traffic already proves a connection alive)
                await subscriber.ping()
                pinged_at = trio.current_time()
            else:
                raise _Silent(f"no answer to PING for {self.timeout:.1f} s")


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
