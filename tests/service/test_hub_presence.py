"""The hub keeps every local session in shared presence and pushes online lists, in batches
of ``PRESENCE_BATCH`` users per round trip."""

from __future__ import annotations

from collections.abc import Collection

import trio

from nursery.pubsub.memory import MemoryBroker, MemoryPresence
from nursery.service.hub import PRESENCE_BATCH, Hub, Item, OnlineNow


class Device:
    def __init__(self, user_id: str, session_id: str) -> None:
        self.user_id, self.session_id = user_id, session_id
        self.online: list[tuple[str, ...]] = []

    def offer(self, item: Item) -> None:
        if isinstance(item, OnlineNow):
            self.online.append(item.online)

    def close(self, code: int, reason: str) -> None:
        raise AssertionError(f"closed {code} {reason}")


class CountingPresence(MemoryPresence):
    def __init__(self) -> None:
        super().__init__()
        self.refresh_sizes: list[int] = []
        self.read_sizes: list[int] = []

    async def refresh(self, entries: dict[str, set[str]], ttl: float) -> None:
        self.refresh_sizes.append(len(entries))
        await super().refresh(entries, ttl)

    async def online_many(self, user_ids: Collection[str]) -> dict[str, set[str]]:
        users = list(user_ids)
        self.read_sizes.append(len(users))
        return await super().online_many(users)


async def test_every_local_user_is_refreshed_and_told_in_bounded_batches(
    autojump_clock: trio.abc.Clock,
) -> None:
    presence = CountingPresence()
    ttl = 15.0
    hub = Hub(MemoryBroker(), presence, presence_ttl=ttl)
    users = 2 * PRESENCE_BATCH + 50
    devices = [Device(f"user-{i}", f"session-{i}") for i in range(users)]
    for device in devices:
        hub.attach(device)
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.keep_presence)
        await trio.sleep(1)
        assert presence.refresh_sizes == [PRESENCE_BATCH, PRESENCE_BATCH, 50]
        assert presence.read_sizes == [PRESENCE_BATCH, PRESENCE_BATCH, 50]
        assert all(device.online == [(device.session_id,)] for device in devices)
        # a ttl/3 later every entry is refreshed again: nobody drops out of presence
        await trio.sleep(2 * ttl)
        online = await presence.online_many([d.user_id for d in devices])
        assert all(online[d.user_id] == {d.session_id} for d in devices)
        nursery.cancel_scope.cancel()
