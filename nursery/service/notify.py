"""Publishing events after a committed write.

The write is already durable when we publish, so a broker failure must not fail the request:
it is logged and counted, and readers recover from the store (a subscriber that lost Redis
refills on reconnect; a gap in revisions is filled on the next change).
"""

from __future__ import annotations

import logging

from nursery.errors import BrokerUnavailable
from nursery.pubsub.broker import Broker
from nursery.pubsub.events import Event, encode

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self.published = 0
        self.failures = 0

    async def publish(self, event: Event) -> None:
        try:
            await self._broker.publish(encode(event))
            self.published += 1
        except BrokerUnavailable as exc:
            self.failures += 1
            log.warning("event not published, readers will refill from the store: %s", exc)
