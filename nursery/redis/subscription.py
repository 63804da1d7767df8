"""One Redis subscriber connection kept subscribed to a changing set of channels.

``ChannelSubscription`` is the part both Redis brokers share: ``RedisBroker`` runs one for
every channel, ``ShardedRedisBroker`` one per cluster master for the channels whose slots
that master serves (SSUBSCRIBE).

What ``want`` and ``drop`` change is sent in batches (``SUBSCRIBE_BATCH`` channels a command;
on a shard one SSUBSCRIBE per slot, as Redis requires, all in one write), so a storm of new
sockets is a few round trips, not one each. A channel is *heard* once Redis confirmed the
last request about it.

Lost connections are retried forever with jittered backoff; once every wanted channel is
confirmed again the owner is told (``Listener.resubscribed``), before any new message. A
channel Redis drops on its own (a sharded channel whose slot moved to another master) leaves
the wanted set and is handed to ``on_evicted``, for the owner to place elsewhere.

It speaks of channels, not of topics: the brokers (``nursery.pubsub``) turn what it hears
into their deliveries, and a failed start (``NotSubscribed``) into ``BrokerUnavailable``.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Collection, Iterator
from typing import NoReturn, Protocol

import trio

from nursery.redis import resp

log = logging.getLogger(__name__)

SUBSCRIBE_BATCH = 1000  # channels per SUBSCRIBE or UNSUBSCRIBE


class NotSubscribed(resp.RedisError):
    """The subscription could not be made within its timeout when it started."""


class Listener(Protocol):
    """What the owner of a subscription hears, in order, in the subscription's task. An
    exception from any of these ends the subscription (re-raised)."""

    def message(self, channel: bytes, payload: bytes) -> None: ...

    def followed(self, channels: set[bytes]) -> None:
        """``channels`` are heard from now on (newly wanted ones)."""

    def resubscribed(self, channels: set[bytes]) -> None:
        """``channels`` are heard again on a new connection: messages before may be lost."""


class _Silent(Exception):
    """The subscriber connection stopped answering PING (half-open TCP, paused server)."""


def backoff_delays(first: float = 0.05, cap: float = 2.0) -> Iterator[float]:
    """Exponential backoff with jitter: ``first`` doubling up to ``cap``, each delay drawn
    from its upper half so that instances that lost Redis together do not return together."""
    delay = first
    while True:
        yield random.uniform(delay / 2, delay)
        delay = min(cap, delay * 2)


class ChannelSubscription:
    """Subscriptions to ``wanted`` channels on the server at ``url``.

    ``timeout`` bounds every network wait;
    ``ping_interval`` is how long the connection may be quiet before it sends a PING: one
    unanswered for ``timeout`` seconds means a dead connection (noticed within
    ``ping_interval + timeout``). ``slot_of`` (sharded subscriptions only) groups channels
    into one SSUBSCRIBE per slot. ``reconnects`` counts lost connections; ``connected`` is
    whether the subscription is live right now.
    """

    def __init__(
        self, url: str, where: str, *, timeout: float, ping_interval: float,
        slot_of: Callable[[bytes], int] | None = None,
    ) -> None:
        self.url = url
        self.where = where  # the URL without credentials
        self.timeout = timeout
        self.ping_interval = ping_interval
        self.reconnects = 0
        self.connected = False
        self.wanted: set[bytes] = set()
        self._slot_of = slot_of
        self._asked: set[bytes] = set()  # what this connection asked to be subscribed to
        # Subscribe and unsubscribe requests may cross their confirmations, so each channel
        # counts the requests still unanswered, and only the answer to the last one counts.
        self._unanswered: dict[bytes, int] = {}
        self._heard: set[bytes] = set()
        self._refill: set[bytes] = set()  # wanted channels that may have missed messages
        self._listening: trio.CancelScope | None = None  # cancelled to apply changes at once

    def want(self, channel: bytes, *, refill: bool = False) -> None:
        """Subscribe ``channel`` soon; ``refill``: its messages may have been missed before
        (it comes from another connection), so its confirmation is ``resubscribed``."""
        self.wanted.add(channel)
        if refill:
            self._refill.add(channel)
        self._apply_soon()

    def drop(self, channel: bytes) -> None:
        self.wanted.discard(channel)
        self._refill.discard(channel)
        self._apply_soon()

    def forget(self, channels: Collection[bytes]) -> None:
        """Stop wanting ``channels`` without telling the server (they moved to another one)."""
        for channel in channels:
            self.wanted.discard(channel)
            self._asked.discard(channel)
            self._heard.discard(channel)
            self._refill.discard(channel)

    def heard(self, channel: bytes) -> bool:
        return self.connected and channel in self._heard

    def _apply_soon(self) -> None:
        if self._listening is not None:
            self._listening.cancel()

    async def run(
        self, listener: Listener, *, fresh: bool = True,
        on_evicted: Callable[[set[bytes]], None] = lambda channels: None,
        on_lost: Callable[[], None] = lambda: None,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> NoReturn:
        """Keep the subscription until cancelled; the caller's nursery owns this task.

        ``fresh``: ``task_status.started()`` once every wanted channel is confirmed; if that
        does not happen within ``timeout`` (retrying with backoff), raises ``NotSubscribed``
        so that startup fails loudly. Afterwards (and from the start if not ``fresh``), each
        time every wanted channel is confirmed on a new connection,
        ``listener.resubscribed(<them>)`` precedes any new message; a lost connection is
        logged, counted, reported to ``on_lost`` and retried forever (0.05 s doubling to 2 s).
        New channels are confirmed with ``listener.followed`` (``resubscribed`` if wanted with
        ``refill``).

        ``listener`` runs in this task; an exception from it ends the subscription
        (re-raised). On cancellation the connection is closed.
        """
        started = not fresh
        deadline = trio.current_time() + self.timeout
        delays = backoff_delays()
        lost_at: float | None = None
        attempts = 0
        while True:
            try:
                async with resp.Subscriber.open(
                    self.url, [], timeout=self.timeout, sharded=self._slot_of is not None
                ) as subscriber:
                    self._asked, self._heard, self._unanswered = set(), set(), {}
                    self._refill.clear()  # the whole set is refilled below
                    await self._resubscribe(subscriber, listener, on_evicted)
                    self.connected = True
                    if not started:
                        started = True
                        log.info("subscribed on %s", self.where)
                        task_status.started()
                    else:
                        if lost_at is not None:
                            log.warning(
                                "resubscribed on %s after %.2f s (%d attempts); messages in "
                                "between may be lost", self.where, trio.current_time() - lost_at,
                                attempts,
                            )
                        listener.resubscribed(set(self.wanted))
                    delays, lost_at, attempts = backoff_delays(), None, 0
                    await self._listen(subscriber, listener, on_evicted)
            except resp.RECOVERABLE + (_Silent,) as exc:
                self.connected = False
                attempts += 1
                if not started:
                    if trio.current_time() >= deadline:
                        raise NotSubscribed(
                            f"cannot subscribe on {self.where}: {resp.reason(exc)}"
                        ) from exc
                elif lost_at is None:
                    lost_at = trio.current_time()
                    self.reconnects += 1
                    log.warning("lost the subscription on %s: %s; reconnecting", self.where, resp.reason(exc))
                    on_lost()
                else:
                    log.info("still cannot resubscribe on %s: %s", self.where, resp.reason(exc))
            finally:
                self.connected = False
                self._listening = None
            await trio.sleep(next(delays))

    async def _resubscribe(self, subscriber: resp.Subscriber, listener: Listener,
                           on_evicted: Callable[[set[bytes]], None]) -> None:
        """Subscribe a new connection to everything wanted; return once Redis confirmed it
        all (messages arriving meanwhile are delivered)."""
        with trio.fail_after(self.timeout):
            while True:
                await self._apply(subscriber)
                if not self._unanswered:
                    return
                for name, payload in await subscriber.messages():
                    listener.message(name, payload)
                self._confirmed(subscriber, on_evicted)

    async def _apply(self, subscriber: resp.Subscriber) -> None:
        """Bring the connection's subscriptions to what is wanted, in batches. ``wanted`` may
        change while a request is being sent: what was sent is what counts as asked."""
        while self.wanted != self._asked:
            add, drop = sorted(self.wanted - self._asked), sorted(self._asked - self.wanted)
            for names, subscribing in ((add, True), (drop, False)):
                if not names:
                    continue
                for name in names:
                    self._unanswered[name] = self._unanswered.get(name, 0) + 1
                    self._heard.discard(name)  # until Redis answers this request
                if subscribing:
                    self._asked.update(names)
                else:
                    self._asked.difference_update(names)
                await subscriber.request(self._batches(names), subscribe=subscribing)

    def _batches(self, names: list[bytes]) -> list[list[bytes]]:
        """Channels in commands: ``SUBSCRIBE_BATCH`` a command; on a shard, also one slot."""
        if self._slot_of is None:
            return [names[i:i + SUBSCRIBE_BATCH] for i in range(0, len(names), SUBSCRIBE_BATCH)]
        by_slot: dict[int, list[bytes]] = {}
        for name in names:
            by_slot.setdefault(self._slot_of(name), []).append(name)
        return [batch[i:i + SUBSCRIBE_BATCH] for batch in by_slot.values()
                for i in range(0, len(batch), SUBSCRIBE_BATCH)]

    def _confirmed(self, subscriber: resp.Subscriber, on_evicted: Callable[[set[bytes]], None]
                   ) -> tuple[set[bytes], set[bytes]]:
        """Account Redis's answers: the channels that became heard, and those of them that
        must refill. Channels Redis dropped without being asked go to ``on_evicted``."""
        newly: set[bytes] = set()
        refill: set[bytes] = set()
        evicted: set[bytes] = set()
        for name, subscribed in subscriber.confirmations():
            left = self._unanswered.get(name, 0) - 1
            if left > 0:
                self._unanswered[name] = left
                continue
            if left < 0 and not subscribed and name in self._asked:  # not asked: the slot moved
                evicted.add(name)
                continue
            self._unanswered.pop(name, None)
            if subscribed and name in self._asked:
                self._heard.add(name)
                (refill if name in self._refill else newly).add(name)
                self._refill.discard(name)
        if evicted:
            self.forget(evicted)
            on_evicted(evicted)
        return newly, refill

    async def _listen(self, subscriber: resp.Subscriber, listener: Listener,
                      on_evicted: Callable[[set[bytes]], None]) -> NoReturn:
        """Hand messages to ``listener`` until the connection fails or falls silent; apply
        changes to the wanted set as they come; confirm new channels."""
        pinged_at: float | None = None
        while True:
            if self.wanted != self._asked:
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
                    listener.message(name, payload)
                newly, refill = self._confirmed(subscriber, on_evicted)
                if newly:
                    listener.followed(newly)
                if refill:
                    listener.resubscribed(refill)
            elif self.wanted != self._asked:
                continue  # woken to apply a change
            elif pinged_at is None:  # quiet: ping (traffic already proves a connection alive)
                await subscriber.ping()
                pinged_at = trio.current_time()
            else:
                raise _Silent(f"no answer to PING for {self.timeout:.1f} s")
