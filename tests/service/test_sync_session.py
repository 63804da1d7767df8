"""The /ws session logic on a virtual clock, without sockets: deadlines, heartbeats, slow
clients, and the backlog/live merge under duplicated, reordered and lost broker messages.

The store behind ``read_changes`` is an in-memory change log here (this is a test of the
merge, not of PostgreSQL); the hub, broker and presence are the real in-process ones.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import trio
import trio.testing

from nursery.errors import Unauthenticated
from nursery.models import Change, ChangeBatch
from nursery.pubsub import events, protocol
from nursery.pubsub.hub import Hub, Refill
from nursery.pubsub.memory import MemoryBroker, MemoryPresence
from nursery.service.accounts import Principal
from nursery.service.sync import SyncLimits, SyncSession, TransportClosed

WHO = Principal("user-1", "session-1")
LIMITS = SyncLimits(hello_timeout=5, ping_interval=20, ping_timeout=10, send_timeout=3, queue_size=8)


class FakeTransport:
    """The client end: frames it sends go to the session; frames the session sends are kept."""

    def __init__(self) -> None:
        self._to_server, self._from_client = trio.open_memory_channel[str](16)
        self.sent: list[dict[str, Any]] = []
        self.closed: tuple[int, str] | None = None
        self.stalled = False  # a client that stopped reading: sends block forever

    async def client_sends(self, body: dict[str, Any] | str) -> None:
        await self._to_server.send(body if isinstance(body, str) else json.dumps(body))

    async def receive(self) -> str:
        try:
            return await self._from_client.receive()
        except trio.EndOfChannel:
            raise TransportClosed() from None

    async def send(self, text: str) -> None:
        if self.stalled:
            await trio.sleep_forever()
        self.sent.append(json.loads(text))

    async def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [f for f in self.sent if f["type"] == kind]


class ChangeLog:
    """A user's committed changes, as the store would return them."""

    def __init__(self) -> None:
        self.changes: list[Change] = []
        self.horizon = 0

    def commit(self, n: int = 1) -> list[Change]:
        made = []
        for _ in range(n):
            rev = len(self.changes) + len(made) + 1
            made.append(Change(rev=rev, op="delete", id=f"todo-{rev}"))
        self.changes.extend(made)
        return made

    async def read(self, who: Principal, since: int, limit: int) -> ChangeBatch:
        await trio.lowlevel.checkpoint()
        after = [c for c in self.changes if c.rev > since]
        head = len(self.changes)
        page = after[:limit]
        more = len(after) > limit
        return ChangeBatch(page, rev=page[-1].rev if more else head, more=more, horizon=self.horizon)


async def authenticate(token: str) -> Principal:
    if token != "good":
        raise Unauthenticated("bad token")
    return WHO


@pytest.fixture
def log() -> ChangeLog:
    return ChangeLog()


@pytest.fixture
def hub() -> Iterator[Hub]:
    yield Hub(MemoryBroker(), MemoryPresence(), presence_ttl=15)


def session(transport: FakeTransport, hub: Hub, log: ChangeLog) -> SyncSession:
    return SyncSession(
        transport, authenticate=authenticate, read_changes=log.read, hub=hub,
        instance="test", limits=LIMITS,
    )


async def wait_until(predicate: Any, timeout: float = 30, poll: float = 0.01) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(poll)


def revs(transport: FakeTransport) -> list[int]:
    return [f["rev"] for f in transport.of_type("change")]


async def test_no_hello_in_time_closes_4001(autojump_clock: Any, hub: Hub, log: ChangeLog) -> None:
    transport = FakeTransport()
    start = trio.current_time()
    await session(transport, hub, log).run()
    assert transport.closed is not None and transport.closed[0] == protocol.UNAUTHENTICATED
    assert trio.current_time() - start == pytest.approx(LIMITS.hello_timeout)


@pytest.mark.parametrize(
    "first, code",
    [
        ({"type": "ping"}, protocol.UNAUTHENTICATED),
        ({"type": "hello", "token": "forged", "since": None}, protocol.UNAUTHENTICATED),
        ({"type": "hello", "since": 0}, protocol.UNAUTHENTICATED),
        ({"type": "hello", "token": "good", "since": -1}, protocol.BAD_MESSAGE),
        ({"type": "hello", "token": "good", "since": "3"}, protocol.BAD_MESSAGE),
        ("not json", protocol.BAD_MESSAGE),
        ("[1, 2]", protocol.BAD_MESSAGE),
    ],
)
async def test_bad_first_frame_is_refused(
    autojump_clock: Any, hub: Hub, log: ChangeLog, first: Any, code: int
) -> None:
    transport = FakeTransport()
    await transport.client_sends(first)
    await session(transport, hub, log).run()
    assert transport.closed is not None and transport.closed[0] == code
    assert transport.of_type("welcome") == []


async def test_silent_client_is_closed_after_ping_timeout(
    autojump_clock: Any, hub: Hub, log: ChangeLog
) -> None:
    transport = FakeTransport()
    await transport.client_sends({"type": "hello", "token": "good", "since": None})
    start = trio.current_time()
    await session(transport, hub, log).run()
    assert transport.closed is not None and transport.closed[0] == protocol.TOO_SLOW
    assert len(transport.of_type("ping")) == 1
    elapsed = trio.current_time() - start
    assert elapsed == pytest.approx(LIMITS.ping_interval + LIMITS.ping_timeout, abs=0.1)
    assert hub.connection_count == 0


async def test_client_that_answers_pings_stays(autojump_clock: Any, hub: Hub, log: ChangeLog) -> None:
    transport = FakeTransport()
    await transport.client_sends({"type": "hello", "token": "good", "since": None})
    async with trio.open_nursery() as nursery:
        nursery.start_soon(session(transport, hub, log).run)
        answered = 0
        with trio.move_on_after(600):  # ten virtual minutes
            while True:
                await wait_until(lambda: len(transport.of_type("ping")) > answered, 60, poll=1)
                answered += 1
                await transport.client_sends({"type": "pong"})
        assert transport.closed is None and answered >= 20
        await transport.client_sends({"type": "ping"})
        await wait_until(lambda: transport.of_type("pong"))
        nursery.cancel_scope.cancel()


async def test_second_hello_is_a_bad_message(autojump_clock: Any, hub: Hub, log: ChangeLog) -> None:
    transport = FakeTransport()
    await transport.client_sends({"type": "hello", "token": "good", "since": None})
    await transport.client_sends({"type": "hello", "token": "good", "since": None})
    await session(transport, hub, log).run()
    assert transport.closed is not None and transport.closed[0] == protocol.BAD_MESSAGE


async def test_backlog_then_live_without_duplicates_or_gaps(
    autojump_clock: Any, hub: Hub, log: ChangeLog
) -> None:
    """Duplicates, reordering and loss on the broker still give 1..N exactly once, in order."""
    log.commit(5)
    transport = FakeTransport()
    await transport.client_sends({"type": "hello", "token": "good", "since": 2})
    async with trio.open_nursery() as nursery:
        nursery.start_soon(session(transport, hub, log).run)
        await wait_until(lambda: len(revs(transport)) == 3)
        assert transport.of_type("welcome")[0]["rev"] == 5

        def publish(change: Change) -> None:
            hub.deliver(_message(events.TodoChanged(WHO.user_id, change)))

        c6, c7, c8, c9 = log.commit(4)
        publish(log.changes[3])  # an old duplicate
        publish(c7)  # out of order: 6 is missing, so the session reads the gap from the store
        publish(c6)  # late duplicate
        publish(c9)
        # c8 is "lost" on the broker: it came from the store with the gap fill
        await wait_until(lambda: revs(transport)[-1] == 9)
        (c10,) = log.commit(1)
        (c11,) = log.commit(1)
        publish(c11)  # c10 lost, and nothing after 11 comes: the gap fill still finds both
        await wait_until(lambda: revs(transport)[-1] == 11)
        log.commit(1)
        hub.deliver(_resubscribed())  # the broker reconnected: refill from the store
        await wait_until(lambda: revs(transport)[-1] == 12)
        nursery.cancel_scope.cancel()
    assert revs(transport) == list(range(3, 13))


async def test_since_null_starts_live_from_head(autojump_clock: Any, hub: Hub, log: ChangeLog) -> None:
    log.commit(3)
    transport = FakeTransport()
    await transport.client_sends({"type": "hello", "token": "good", "since": None})
    async with trio.open_nursery() as nursery:
        nursery.start_soon(session(transport, hub, log).run)
        await wait_until(lambda: transport.of_type("welcome"))
        (c4,) = log.commit(1)
        hub.deliver(_message(events.TodoChanged(WHO.user_id, c4)))
        await wait_until(lambda: revs(transport) == [4])
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("since, horizon", [(2, 3), (99, 0)])
async def test_since_past_retention_or_from_the_future_resets(
    autojump_clock: Any, hub: Hub, log: ChangeLog, since: int, horizon: int
) -> None:
    log.commit(5)
    log.horizon = horizon
    transport = FakeTransport()
    await transport.client_sends({"type": "hello", "token": "good", "since": since})
    async with trio.open_nursery() as nursery:
        nursery.start_soon(session(transport, hub, log).run)
        await wait_until(lambda: transport.of_type("reset"))
        assert transport.of_type("reset")[0]["rev"] == 5
        assert revs(transport) == []
        nursery.cancel_scope.cancel()


async def test_stalled_client_is_closed_4008_and_others_keep_receiving(
    autojump_clock: Any, hub: Hub, log: ChangeLog
) -> None:
    stalled, healthy = FakeTransport(), FakeTransport()
    for transport in (stalled, healthy):
        await transport.client_sends({"type": "hello", "token": "good", "since": None})
    async with trio.open_nursery() as nursery:
        nursery.start_soon(session(healthy, hub, log).run)
        await wait_until(lambda: healthy.of_type("welcome"))
        stalled_session = session(stalled, hub, log)
        nursery.start_soon(stalled_session.run)
        await wait_until(lambda: stalled.of_type("welcome"))
        stalled.stalled = True
        start = trio.current_time()
        for change in log.commit(50):  # far more than the queue holds
            hub.deliver(_message(events.TodoChanged(WHO.user_id, change)))
            await trio.sleep(0.001)
        await wait_until(lambda: stalled.closed is not None)
        assert stalled.closed is not None and stalled.closed[0] == protocol.TOO_SLOW
        assert trio.current_time() - start <= LIMITS.send_timeout + 1
        await wait_until(lambda: revs(healthy)[-1:] == [50])
        assert revs(healthy) == list(range(1, 51))
        assert hub.connection_count == 1
        nursery.cancel_scope.cancel()


async def test_revocation_closes_only_that_session(autojump_clock: Any, hub: Hub, log: ChangeLog) -> None:
    transport = FakeTransport()
    await transport.client_sends({"type": "hello", "token": "good", "since": None})
    async with trio.open_nursery() as nursery:
        nursery.start_soon(session(transport, hub, log).run)
        await wait_until(lambda: transport.of_type("welcome"))
        other = {"id": "session-2", "device": "phone"}
        hub.deliver(_message(events.SessionChanged(WHO.user_id, "revoked", other, "session-2")))
        await wait_until(lambda: transport.of_type("session"))
        assert transport.closed is None
        mine = {"id": WHO.session_id, "device": "laptop"}
        hub.deliver(_message(events.SessionChanged(WHO.user_id, "revoked", mine, WHO.session_id)))
        await wait_until(lambda: transport.closed is not None)
    assert transport.closed is not None and transport.closed[0] == protocol.UNAUTHENTICATED


async def test_shutdown_closes_with_1012_and_refuses_late_joiners(
    autojump_clock: Any, hub: Hub, log: ChangeLog
) -> None:
    early, late = FakeTransport(), FakeTransport()
    async with trio.open_nursery() as nursery:
        await early.client_sends({"type": "hello", "token": "good", "since": None})
        nursery.start_soon(session(early, hub, log).run)
        await wait_until(lambda: early.of_type("welcome"))
        hub.close_all(protocol.RESTARTING, "restarting")
        await late.client_sends({"type": "hello", "token": "good", "since": None})
        nursery.start_soon(session(late, hub, log).run)
    assert early.closed is not None and early.closed[0] == protocol.RESTARTING
    assert late.closed is not None and late.closed[0] == protocol.RESTARTING


def _message(event: events.Event) -> Any:
    from nursery.pubsub.broker import Message

    return Message(events.encode(event))


def _resubscribed() -> Any:
    from nursery.pubsub.broker import Resubscribed

    assert Refill  # the hub turns this into a Refill for every session
    return Resubscribed()


class SlowLog(ChangeLog):
    """A store whose reads wait for ``gate`` (a busy database during a reconnect storm)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = trio.Event()
        self.reading = 0

    async def read(self, who: Principal, since: int, limit: int) -> ChangeBatch:
        self.reading += 1
        await self.gate.wait()
        return await super().read(who, since, limit)


async def test_connections_are_set_up_a_few_at_a_time(autojump_clock: Any) -> None:
    hub = Hub(MemoryBroker(), MemoryPresence(), presence_ttl=15, setup_concurrency=2, setup_timeout=10)
    log = SlowLog()
    transports = [FakeTransport() for _ in range(5)]
    async with trio.open_nursery() as nursery:
        for transport in transports:
            await transport.client_sends({"type": "hello", "token": "good", "since": None})
            nursery.start_soon(session(transport, hub, log).run)
        await trio.sleep(1)
        assert log.reading == 2  # the others wait for a place, not for the database
        log.gate.set()
        await wait_until(lambda: all(t.of_type("welcome") for t in transports))
        await hub.admit()  # every place was given back once its feed was live
        await hub.admit()
        nursery.cancel_scope.cancel()


async def test_a_connection_that_waits_too_long_to_be_set_up_is_told_to_retry(
    autojump_clock: Any,
) -> None:
    hub = Hub(MemoryBroker(), MemoryPresence(), presence_ttl=15, setup_concurrency=1, setup_timeout=10)
    log = SlowLog()  # never answers: the first connection holds the only place
    first, second = FakeTransport(), FakeTransport()
    async with trio.open_nursery() as nursery:
        for transport in (first, second):
            await transport.client_sends({"type": "hello", "token": "good", "since": None})
            nursery.start_soon(session(transport, hub, log).run)
        await wait_until(lambda: second.closed is not None)
        assert second.closed is not None and second.closed[0] == 1013
        assert trio.current_time() == pytest.approx(10, abs=0.1)
        nursery.cancel_scope.cancel()
