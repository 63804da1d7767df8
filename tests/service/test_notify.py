"""The notifier batches concurrent publishes and announces every committed write, even when
the request that made it is cancelled (service/notify.py)."""

from __future__ import annotations

from collections.abc import Sequence

import trio

from nursery.errors import BrokerUnavailable
from nursery.models import Change
from nursery.pubsub.events import TodoChanged, decode
from nursery.service.notify import Notifier


class SlowBroker:
    """Takes ``delay`` per round trip; remembers what it was given, batch by batch."""

    connected = True

    def __init__(self, delay: float = 0.01, *, down: bool = False) -> None:
        self.delay = delay
        self.down = down
        self.batches: list[list[bytes]] = []

    async def publish_many(self, messages: Sequence[tuple[str, bytes]]) -> None:
        await trio.sleep(self.delay)
        if self.down:
            raise BrokerUnavailable("redis PUBLISH failed: timed out")
        assert all(topic == "user-1" for topic, _ in messages)  # each on its user's topic
        self.batches.append([payload for _, payload in messages])


def event(rev: int) -> TodoChanged:
    return TodoChanged.of("user-1", Change(rev=rev, op="delete", id=f"todo-{rev}"))


def revs(batches: list[list[bytes]]) -> list[int]:
    return [decode(p).change.rev for batch in batches for p in batch]  # type: ignore[union-attr]


async def test_concurrent_publishes_share_round_trips(autojump_clock: trio.abc.Clock) -> None:
    broker = SlowBroker()
    notifier = Notifier(broker)
    async with trio.open_nursery() as nursery:
        for rev in range(1, 21):
            nursery.start_soon(notifier.publish, event(rev))
    assert sorted(revs(broker.batches)) == list(range(1, 21))  # each once
    # the first goes at once with whoever joined before it was sent; the rest gather meanwhile
    assert len(broker.batches) <= 2
    assert (notifier.published, notifier.failures) == (20, 0)


async def test_one_publisher_s_events_keep_their_order(autojump_clock: trio.abc.Clock) -> None:
    broker = SlowBroker()
    notifier = Notifier(broker)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(notifier.publish, event(1))  # keeps a batch in flight meanwhile
        await trio.sleep(0.001)
        for rev in range(2, 6):
            await notifier.publish(event(rev))
    assert revs(broker.batches) == [1, 2, 3, 4, 5]


async def test_one_publisher_alone_is_not_delayed(autojump_clock: trio.abc.Clock) -> None:
    broker = SlowBroker(delay=0.01)
    notifier = Notifier(broker)
    started = trio.current_time()
    await notifier.publish(event(1))
    assert trio.current_time() - started == 0.01
    assert broker.batches == [[broker.batches[0][0]]]


async def test_a_cancelled_request_still_announces_its_write(autojump_clock: trio.abc.Clock) -> None:
    broker = SlowBroker(delay=1.0)
    notifier = Notifier(broker)
    with trio.move_on_after(0.1):  # the client went away while its write was being announced
        await notifier.publish(event(1))
    with trio.move_on_after(0.1):  # this one only waited for the batch: it is sent too
        async with trio.open_nursery() as nursery:
            nursery.start_soon(notifier.publish, event(2))
            nursery.start_soon(notifier.publish, event(3))
    await trio.sleep(5)
    assert sorted(revs(broker.batches)) == [1, 2, 3]


async def test_a_broker_failure_is_counted_not_raised(autojump_clock: trio.abc.Clock) -> None:
    notifier = Notifier(SlowBroker(down=True))
    async with trio.open_nursery() as nursery:
        for rev in range(1, 4):
            nursery.start_soon(notifier.publish, event(rev))
    assert (notifier.published, notifier.failures) == (0, 3)
