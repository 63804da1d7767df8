"""The hub follows a user's broker topic while it holds that user's subscribers, and a new
subscriber only reads the store once the topic is heard (the gap-free start), or refills when
a late confirmation comes. On a virtual clock, with a broker whose confirmations the test
gives (the Redis broker confirms the same way: tests/pubsub/test_redis_faults.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NoReturn

import pytest
import trio

from nursery.pubsub.broker import EVERYONE, Deliver, Followed
from nursery.pubsub.memory import MemoryPresence
from nursery.service.hub import Hub, Item, Refill


class ConfirmingBroker:
    """Follows topics when told to confirm them (``confirm``), as a server would."""

    connected = True

    def __init__(self) -> None:
        self.wanted: set[str] = {EVERYONE}
        self.heard: set[str] = {EVERYONE}
        self.deliver: Deliver | None = None

    async def publish_many(self, messages: Sequence[tuple[str, bytes]]) -> None:
        await trio.lowlevel.checkpoint()

    def follow(self, topic: str) -> None:
        self.wanted.add(topic)

    def unfollow(self, topic: str) -> None:
        self.wanted.discard(topic)
        self.heard.discard(topic)

    def following(self, topic: str) -> bool:
        return topic in self.heard

    def confirm(self, topic: str) -> None:
        self.heard.add(topic)
        assert self.deliver is not None
        self.deliver(Followed(frozenset({topic})))

    async def subscribe(self, deliver: Deliver, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> NoReturn:
        self.deliver = deliver
        task_status.started()
        await trio.sleep_forever()


class Device:
    def __init__(self, user_id: str, session_id: str) -> None:
        self.user_id, self.session_id = user_id, session_id
        self.items: list[Item] = []

    def offer(self, item: Item) -> None:
        self.items.append(item)

    def close(self, code: int, reason: str) -> None:
        pass


@pytest.fixture
async def broker_and_hub(nursery: trio.Nursery) -> tuple[ConfirmingBroker, Hub]:
    broker = ConfirmingBroker()
    hub = Hub(broker, MemoryPresence(), presence_ttl=15, follow_timeout=3)
    await nursery.start(broker.subscribe, hub.deliver)
    return broker, hub


async def test_a_first_device_waits_until_its_user_is_heard(
    autojump_clock: Any, broker_and_hub: tuple[ConfirmingBroker, Hub]
) -> None:
    broker, hub = broker_and_hub
    joined = trio.Event()

    async def join(device: Device) -> None:
        await hub.join(device)
        joined.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(join, Device("ada", "laptop"))
        await trio.sleep(1)
        assert "ada" in broker.wanted and not joined.is_set()  # asked, not yet heard
        broker.confirm("ada")
        await joined.wait()
        second = Device("ada", "phone")
        with trio.fail_after(0.01):  # heard already: no wait
            await hub.join(second)
        hub.detach(second)
    assert "ada" in broker.wanted  # the laptop is still there


async def test_a_late_confirmation_refills_the_devices_that_did_not_wait(
    autojump_clock: Any, broker_and_hub: tuple[ConfirmingBroker, Hub]
) -> None:
    broker, hub = broker_and_hub
    device = Device("ada", "laptop")
    start = trio.current_time()
    await hub.join(device)  # the broker is slow: the join gives up waiting after 3 s
    assert trio.current_time() - start == pytest.approx(3)
    assert device.items == []
    broker.confirm("ada")  # messages published before this may have been missed
    assert device.items == [Refill()]


async def test_the_last_device_leaving_unfollows_its_user(
    autojump_clock: Any, broker_and_hub: tuple[ConfirmingBroker, Hub]
) -> None:
    broker, hub = broker_and_hub
    laptop, phone = Device("ada", "laptop"), Device("ada", "phone")
    hub.attach(laptop)
    hub.attach(phone)
    hub.detach(laptop)
    assert "ada" in broker.wanted
    hub.detach(phone)
    assert "ada" not in broker.wanted and broker.wanted == {EVERYONE}
