"""/ws's own part of a session (``api.ws.SyncSocket``), on a virtual clock: its opening
frame, and the backlog/live merge from a ``since``. The rules every socket obeys are in
``test_session.py``."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from nursery.protocol import close_codes
from nursery.pubsub.memory import MemoryBroker, MemoryPresence
from nursery.service.hub import Hub
from tests.service.sessions import PROTOCOLS, RESUBSCRIBED, Accounts, ChangeLog, change_message
from tests.service.test_session import Client, wait_until

WS = next(p for p in PROTOCOLS if p.name == "ws")


@pytest.fixture
def hub() -> Hub:
    return Hub(MemoryBroker(), MemoryPresence(), presence_ttl=15)


@pytest.mark.parametrize(
    "first, code",
    [
        ({"type": "ping"}, close_codes.UNAUTHENTICATED),
        ({"type": "hello", "since": 0}, close_codes.UNAUTHENTICATED),
        ({"type": "hello", "token": "good", "since": -1}, close_codes.BAD_MESSAGE),
        ({"type": "hello", "token": "good", "since": "3"}, close_codes.BAD_MESSAGE),
        ("not json", close_codes.BAD_MESSAGE),
        ("[1, 2]", close_codes.BAD_MESSAGE),
    ],
)
async def test_bad_first_frame_is_refused(autojump_clock: Any, hub: Hub, first: Any, code: int) -> None:
    client = Client(WS, hub, ChangeLog(), Accounts())
    await client.transport.client_sends(first)
    await client.run()
    assert client.code == code
    assert client.transport.of_type("welcome") == []


async def test_second_hello_is_a_bad_message(autojump_clock: Any, hub: Hub) -> None:
    client = Client(WS, hub, ChangeLog(), Accounts())
    await client.transport.client_sends({"type": "hello", "token": "good", "since": None})
    await client.transport.client_sends({"type": "hello", "token": "good", "since": None})
    await client.run()
    assert client.code == close_codes.BAD_MESSAGE


async def test_welcome_names_the_session_and_the_head(autojump_clock: Any, hub: Hub) -> None:
    log = ChangeLog()
    log.commit(3)
    client = Client(WS, hub, log, Accounts())
    async with trio.open_nursery() as nursery:
        await client.connect(nursery)
        (welcome,) = client.transport.of_type("welcome")
        assert welcome == {"type": "welcome", "session": "session-1", "instance": "test", "rev": 3}
        nursery.cancel_scope.cancel()


async def test_backlog_then_live_without_duplicates_or_gaps(autojump_clock: Any, hub: Hub) -> None:
    """From ``since``: the backlog, then live changes; duplicates, reordering and loss on
    the broker still give every revision once, in order."""
    log = ChangeLog()
    log.commit(5)
    client = Client(WS, hub, log, Accounts())
    async with trio.open_nursery() as nursery:
        await client.transport.client_sends({"type": "hello", "token": "good", "since": 2})
        nursery.start_soon(client.run)
        await wait_until(lambda: len(client.revs()) == 3)
        assert client.transport.of_type("welcome")[0]["rev"] == 5
        c6, c7, c8, c9 = log.commit(4)
        hub.deliver(change_message(log.changes[3]))  # an old duplicate
        hub.deliver(change_message(c7))  # 6 is missing: the gap is read from the store
        hub.deliver(change_message(c6))  # a late duplicate
        hub.deliver(change_message(c9))  # 8 was lost on the broker
        await wait_until(lambda: client.revs()[-1] == 9)
        log.commit(2)
        hub.deliver(change_message(log.changes[-1]))  # 10 lost, and nothing after 11
        await wait_until(lambda: client.revs()[-1] == 11)
        log.commit(1)
        hub.deliver(RESUBSCRIBED)  # the broker reconnected: refill from the store
        await wait_until(lambda: client.revs()[-1] == 12)
        nursery.cancel_scope.cancel()
    assert client.revs() == list(range(3, 13))


async def test_changes_during_the_backlog_are_not_lost(autojump_clock: Any, hub: Hub) -> None:
    """Live changes that arrive while the backlog is read queue up and follow it."""
    log = ChangeLog()
    log.commit(600)  # more than one store batch
    client = Client(WS, hub, log, Accounts())
    async with trio.open_nursery() as nursery:
        await client.transport.client_sends({"type": "hello", "token": "good", "since": 0})
        nursery.start_soon(client.run)
        await wait_until(lambda: len(client.revs()) >= 1)
        for change in log.commit(5):
            hub.deliver(change_message(change))
        await wait_until(lambda: client.revs()[-1:] == [605])
        nursery.cancel_scope.cancel()
    assert client.revs() == list(range(1, 606))


async def test_since_null_starts_live_from_head(autojump_clock: Any, hub: Hub) -> None:
    log = ChangeLog()
    log.commit(3)
    client = Client(WS, hub, log, Accounts())
    async with trio.open_nursery() as nursery:
        await client.connect(nursery)
        (c4,) = log.commit(1)
        hub.deliver(change_message(c4))
        await wait_until(lambda: client.revs() == [4])
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("since, horizon", [(2, 3), (99, 0)])
async def test_since_past_retention_or_from_the_future_resets(
    autojump_clock: Any, hub: Hub, since: int, horizon: int
) -> None:
    log = ChangeLog()
    log.commit(5)
    log.horizon = horizon
    client = Client(WS, hub, log, Accounts())
    async with trio.open_nursery() as nursery:
        await client.transport.client_sends({"type": "hello", "token": "good", "since": since})
        nursery.start_soon(client.run)
        await wait_until(lambda: client.transport.of_type("reset"))
        assert client.transport.of_type("reset")[0]["rev"] == 5
        assert client.revs() == []
        nursery.cancel_scope.cancel()
