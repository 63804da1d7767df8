"""Publishing events after a committed write.

The write is already durable when we publish, so a broker failure must not fail the request:
it is logged and counted, and readers recover from the store (a subscriber that lost Redis
refills on reconnect; a gap in revisions is filled on the next change).

Publishes are batched: while one batch is on its way to the broker, the events published
meanwhile gather into the next, which goes out in one round trip (``Broker.publish_many``)
as soon as the first is done. One publisher alone waits no longer than before; many at once
share the crossings. Each batch is sent by its first publisher, shielded from cancellation:
a committed write is announced even when its request is cancelled (the client went away),
within the broker's own timeout.
"""

from __future__ import annotations

import logging

import trio

from nursery.errors import BrokerUnavailable
from nursery.pubsub.broker import Broker
from nursery.pubsub.events import Event, encode, topic

log = logging.getLogger(__name__)


class _Batch:
    __slots__ = ("payloads", "sent")

    def __init__(self) -> None:
        self.payloads: list[tuple[str, bytes]] = []  # (topic, payload)
        self.sent = trio.Event()


class Notifier:
    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self._next = _Batch()
        self._one_in_flight = trio.Lock()
        self.published = 0
        self.failures = 0
        self.batches = 0

    async def publish(self, event: Event) -> None:
        """Returns once the event is handed to the broker (or given up on, logged)."""
        batch = self._next
        batch.payloads.append((topic(event), encode(event)))
        if len(batch.payloads) > 1:
            await batch.sent.wait()  # its first publisher sends it
            return
        with trio.CancelScope(shield=True):  # bounded: the broker times out
            async with self._one_in_flight:
                self._next = _Batch()  # publishes from now on gather for the next round
                await self._send(batch)

    async def _send(self, batch: _Batch) -> None:
        try:
            await self._broker.publish_many(batch.payloads)
            self.published += len(batch.payloads)
        except BrokerUnavailable as exc:
            self.failures += len(batch.payloads)
            log.warning(
                "%d events not published, readers will refill from the store: %s",
                len(batch.payloads), exc,
            )
        finally:
            self.batches += 1
            batch.sent.set()
