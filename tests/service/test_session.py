"""Every websocket obeys the same rules, whatever its protocol: one matrix, /ws and GraphQL.

On a virtual clock, without sockets: the session core (``service.session``) with each
protocol's vocabulary, the real hub, broker and presence, an in-memory change log.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import trio
import trio.testing

from nursery.protocol import close_codes
from nursery.pubsub.memory import MemoryBroker, MemoryPresence
from nursery.service.hub import Hub
from nursery.service.session import Session
from tests.service.sessions import (
    LIMITS,
    PROTOCOLS,
    RESUBSCRIBED,
    Accounts,
    ChangeLog,
    MemoryTransport,
    Protocol,
    change_message,
    revoked_message,
)


@pytest.fixture(params=PROTOCOLS, ids=lambda p: p.name)
def protocol(request: pytest.FixtureRequest) -> Protocol:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def log() -> ChangeLog:
    return ChangeLog()


@pytest.fixture
def accounts() -> Accounts:
    return Accounts()


@pytest.fixture
def hub() -> Iterator[Hub]:
    yield Hub(MemoryBroker(), MemoryPresence(), presence_ttl=15)


class Client:
    """One client's end of a session under test, and the session's outcome."""

    def __init__(self, protocol: Protocol, hub: Hub, log: ChangeLog, accounts: Accounts) -> None:
        self.protocol = protocol
        self.transport = MemoryTransport()
        self.session = Session(self.transport, authenticate=accounts.authenticate, hub=hub,
                               limits=LIMITS)
        self._log = log
        self.outcome: tuple[int | None, str] | None = None

    async def run(self) -> None:
        self.outcome = await self.session.run(self.protocol.vocabulary(self.session, self._log))

    async def connect(self, nursery: trio.Nursery, token: str = "good") -> None:
        """Open and subscribe; returns once changes will be delivered."""
        await self.protocol.open(self.transport, token)
        nursery.start_soon(self.run)
        await wait_until(lambda: self.ready or self.outcome is not None)
        await self.protocol.subscribe(self.transport)
        await wait_until(lambda: self.protocol.ready(self.transport) or self.outcome is not None)

    @property
    def ready(self) -> bool:
        return self.session.who is not None and self.session.nursery is not None

    @property
    def code(self) -> int | None:
        return self.transport.closed[0] if self.transport.closed else None

    def revs(self) -> list[int]:
        return self.protocol.revs(self.transport)


async def wait_until(predicate: Any, timeout: float = 60, poll: float = 0.01) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(poll)


# -- opening ---------------------------------------------------------------------------------


async def test_no_opening_message_in_time(
    autojump_clock: Any, protocol: Protocol, hub: Hub, log: ChangeLog, accounts: Accounts
) -> None:
    client = Client(protocol, hub, log, accounts)
    start = trio.current_time()
    await client.run()
    assert client.code == protocol.auth_timeout
    assert trio.current_time() - start == pytest.approx(LIMITS.hello_timeout)


async def test_a_refused_token(
    autojump_clock: Any, protocol: Protocol, hub: Hub, log: ChangeLog, accounts: Accounts
) -> None:
    client = Client(protocol, hub, log, accounts)
    await protocol.open(client.transport, "forged")
    await client.run()
    assert client.code == protocol.auth_refused
    assert hub.connection_count == 0


async def test_database_down_at_connect_says_try_again_later(
    autojump_clock: Any, protocol: Protocol, hub: Hub, log: ChangeLog, accounts: Accounts
) -> None:
    accounts.down = True
    client = Client(protocol, hub, log, accounts)
    await protocol.open(client.transport)
    await client.run()
    assert client.code == close_codes.TRY_AGAIN_LATER


async def test_a_busy_instance_says_try_again_later(
    autojump_clock: Any, protocol: Protocol, log: ChangeLog, accounts: Accounts
) -> None:
    """Admission: sessions are set up a few at a time; one that waits 10 s is told to retry."""
    hub = Hub(MemoryBroker(), MemoryPresence(), presence_ttl=15, setup_concurrency=1,
              setup_timeout=10)
    async with trio.open_nursery() as nursery:
        slot = await hub.admit()  # another connection being set up, for a long time
        client = Client(protocol, hub, log, accounts)
        await protocol.open(client.transport)
        await client.run()
        assert client.code == close_codes.TRY_AGAIN_LATER
        assert trio.current_time() == pytest.approx(10, abs=0.1)
        slot.release()
        nursery.cancel_scope.cancel()


# -- while live ------------------------------------------------------------------------------


async def test_the_token_expires(
    autojump_clock: Any, protocol: Protocol, hub: Hub, log: ChangeLog
) -> None:
    """The GraphQL socket once outlived its token: every socket closes 4001 at expiry."""
    client = Client(protocol, hub, log, Accounts(lifetime=30))
    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        await client.connect(nursery)
        for _ in range(10):  # a talkative client does not delay it
            await trio.sleep(2)
            await client.transport.client_sends(protocol.ping)
        await wait_until(lambda: client.outcome is not None)
    assert client.code == close_codes.UNAUTHENTICATED
    assert trio.current_time() - start == pytest.approx(30, abs=0.5)
    assert hub.connection_count == 0


async def test_revoked_on_another_instance(
    autojump_clock: Any, protocol: Protocol, hub: Hub, log: ChangeLog, accounts: Accounts
) -> None:
    """A revocation (a logout here or elsewhere, a "sign out that device") reaches every
    instance as a broker message: that session's sockets close 4001, its user's others stay."""
    client = Client(protocol, hub, log, accounts)
    async with trio.open_nursery() as nursery:
        await client.connect(nursery)
        hub.deliver(revoked_message("another-session"))
        await trio.sleep(1)
        assert client.outcome is None
        hub.deliver(revoked_message())
        await wait_until(lambda: client.outcome is not None)
    assert client.code == close_codes.UNAUTHENTICATED


async def test_a_flood_of_messages(
    autojump_clock: Any, protocol: Protocol, hub: Hub, log: ChangeLog, accounts: Accounts
) -> None:
    client = Client(protocol, hub, log, accounts)
    async with trio.open_nursery() as nursery:
        await client.connect(nursery)
        for _ in range(LIMITS.message_rate.count + 5):
            await client.transport.client_sends(protocol.ping)
        await wait_until(lambda: client.outcome is not None)
    assert client.code == close_codes.RATE_LIMITED


async def test_a_silent_client_is_pinged_then_closed(
    autojump_clock: Any, protocol: Protocol, hub: Hub, log: ChangeLog, accounts: Accounts
) -> None:
    client = Client(protocol, hub, log, accounts)
    async with trio.open_nursery() as nursery:
        await client.connect(nursery)
        start = trio.current_time()
        await wait_until(lambda: client.outcome is not None)
    assert client.code == close_codes.TOO_SLOW
    assert len(client.transport.of_type("ping")) == 1
    assert trio.current_time() - start == pytest.approx(
        LIMITS.ping_interval + LIMITS.ping_timeout, abs=0.1)
    assert hub.connection_count == 0


async def test_a_client_that_answers_pings_stays(
    autojump_clock: Any, protocol: Protocol, hub: Hub, log: ChangeLog, accounts: Accounts
) -> None:
    client = Client(protocol, hub, log, accounts)
    async with trio.open_nursery() as nursery:
        await client.connect(nursery)
        answered = 0
        with trio.move_on_after(600):  # ten virtual minutes
            while True:
                await wait_until(lambda n=answered: len(client.transport.of_type("ping")) > n, poll=1)
                answered += 1
                await client.transport.client_sends(protocol.pong)
        assert client.outcome is None and answered >= 20
        await client.transport.client_sends(protocol.ping)
        await wait_until(lambda: client.transport.of_type("pong"))
        nursery.cancel_scope.cancel()


async def test_a_slow_consumer_is_closed_and_others_keep_receiving(
    autojump_clock: Any, protocol: Protocol, hub: Hub, log: ChangeLog, accounts: Accounts
) -> None:
    stalled, healthy = (Client(protocol, hub, log, accounts) for _ in range(2))
    async with trio.open_nursery() as nursery:
        await healthy.connect(nursery)
        await stalled.connect(nursery)
        stalled.transport.stalled = True
        start = trio.current_time()
        for change in log.commit(50):  # far more than a queue holds
            hub.deliver(change_message(change))
            await trio.sleep(0.001)
        await wait_until(lambda: stalled.outcome is not None)
        assert stalled.code == close_codes.TOO_SLOW
        assert trio.current_time() - start <= LIMITS.send_timeout + 1
        await wait_until(lambda: healthy.revs()[-1:] == [50])
        assert healthy.revs() == list(range(1, 51))
        assert hub.connection_count == 1
        nursery.cancel_scope.cancel()


async def test_drain_closes_with_1012_and_refuses_late_joiners(
    autojump_clock: Any, protocol: Protocol, hub: Hub, log: ChangeLog, accounts: Accounts
) -> None:
    early, late = Client(protocol, hub, log, accounts), Client(protocol, hub, log, accounts)
    async with trio.open_nursery() as nursery:
        await early.connect(nursery)
        hub.close_all(close_codes.RESTARTING, "restarting")
        await protocol.open(late.transport)
        nursery.start_soon(late.run)
    assert early.code == close_codes.RESTARTING
    assert late.code == close_codes.RESTARTING


async def test_every_change_once_in_order_through_loss_and_reconnects(
    autojump_clock: Any, protocol: Protocol, hub: Hub, log: ChangeLog, accounts: Accounts
) -> None:
    """Duplicates, reordering and loss on the broker, and a broker reconnect, still give
    every revision exactly once, in order."""
    client = Client(protocol, hub, log, accounts)
    async with trio.open_nursery() as nursery:
        await client.connect(nursery)
        c1, c2, c3, c4 = log.commit(4)
        hub.deliver(change_message(c2))  # out of order: 1 is missing, read from the store
        hub.deliver(change_message(c1))  # late duplicate
        hub.deliver(change_message(c4))  # 3 was lost on the broker
        await wait_until(lambda: client.revs()[-1:] == [4])
        log.commit(2)  # both lost; the broker reconnects: everything after 4 is read
        hub.deliver(RESUBSCRIBED)
        await wait_until(lambda: client.revs()[-1:] == [6])
        nursery.cancel_scope.cancel()
    assert client.revs() == [1, 2, 3, 4, 5, 6]


async def test_database_down_while_filling_a_gap(
    autojump_clock: Any, protocol: Protocol, hub: Hub, log: ChangeLog, accounts: Accounts
) -> None:
    client = Client(protocol, hub, log, accounts)
    async with trio.open_nursery() as nursery:
        await client.connect(nursery)
        log.down = True
        _, c2 = log.commit(2)
        hub.deliver(change_message(c2))  # a gap the store cannot fill
        await wait_until(lambda: client.outcome is not None)
    assert client.code == close_codes.TRY_AGAIN_LATER


async def test_a_server_failure_is_logged_and_closes(
    autojump_clock: Any, protocol: Protocol, hub: Hub, accounts: Accounts,
    caplog: pytest.LogCaptureFixture,
) -> None:
    class BrokenLog(ChangeLog):
        async def read(self, *args: Any) -> Any:
            raise RuntimeError("a bug")

    client = Client(protocol, hub, BrokenLog(), accounts)
    async with trio.open_nursery() as nursery:
        await client.connect(nursery)
        await wait_until(lambda: client.outcome is not None)
    assert client.code == protocol.internal_error
    assert "websocket session failed" in caplog.text and "a bug" in caplog.text


async def test_the_client_leaving_ends_the_session_quietly(
    autojump_clock: Any, protocol: Protocol, hub: Hub, log: ChangeLog, accounts: Accounts
) -> None:
    client = Client(protocol, hub, log, accounts)
    async with trio.open_nursery() as nursery:
        await client.connect(nursery)
        client.transport.client_leaves()
        await wait_until(lambda: client.outcome is not None)
    assert client.outcome == (None, "the client left")
    assert client.transport.closed is None  # no close frame to a peer that is gone
    assert hub.connection_count == 0
