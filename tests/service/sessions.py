"""Test doubles for websocket sessions on a virtual clock: the client end of a transport, an
in-memory change log, and one driver per protocol (/ws, graphql-transport-ws) that knows how
that protocol opens a session and subscribes to changes.

The hub, broker and presence are the real in-process ones; the store is an in-memory change
log (these are tests of the session rules and the merge, not of PostgreSQL).
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from nursery.api.graphql import Engine, build_schema
from nursery.api.graphql.connection import GraphQLSocket
from nursery.api.ws import SyncSocket
from nursery.errors import StoreUnavailable, Unauthenticated
from nursery.models import Change, ChangeBatch
from nursery.protocol import close_codes
from nursery.protocol.close_codes import TransportClosed
from nursery.pubsub import events
from nursery.pubsub.broker import Message, Resubscribed
from nursery.service.accounts import Principal
from nursery.service.session import Session, SessionLimits, Vocabulary

USER, SESSION = "user-1", "session-1"
LIMITS = SessionLimits(hello_timeout=5, ping_interval=20, ping_timeout=10, send_timeout=3,
                       queue_size=8)


class MemoryTransport:
    """The client end of a session's transport. What the session sends is kept in ``sent``;
    a ``stalled`` client stops reading: sends pile up in the backlog and never drain."""

    def __init__(self) -> None:
        self._to_server, self._from_client = trio.open_memory_channel[str](64)
        self.sent: list[dict[str, Any]] = []
        self.outbox: list[str] = []
        self.closed: tuple[int, str] | None = None
        self.stalled = False
        self._drained = trio.Event()

    async def client_sends(self, body: dict[str, Any] | str) -> None:
        await self._to_server.send(body if isinstance(body, str) else json.dumps(body))

    def client_leaves(self) -> None:
        self._to_server.close()

    # -- the Transport protocol -----------------------------------------------------------------

    def send(self, text: str) -> None:
        if self.closed is not None:
            raise TransportClosed()
        if self.stalled:
            self.outbox.append(text)
        else:
            self.sent.append(json.loads(text))

    @property
    def backlog(self) -> int:
        return len(self.outbox)

    async def drain(self) -> None:
        while self.outbox:
            if self.stalled:
                await trio.sleep_forever()
            self.sent.append(json.loads(self.outbox.pop(0)))
        await trio.lowlevel.checkpoint()

    async def receive(self) -> str:
        try:
            return await self._from_client.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise TransportClosed() from None

    async def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)

    # -- for assertions -------------------------------------------------------------------------

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [f for f in self.sent if f.get("type") == kind]


class ChangeLog:
    """One user's committed changes, as ``Todos.changes`` would return them."""

    def __init__(self) -> None:
        self.changes: list[Change] = []
        self.horizon = 0
        self.down = False  # the database is unreachable
        self.reads = 0

    def commit(self, n: int = 1) -> list[Change]:
        made = []
        for _ in range(n):
            rev = len(self.changes) + len(made) + 1
            made.append(Change(rev=rev, op="delete", id=f"todo-{rev}"))
        self.changes.extend(made)
        return made

    async def read(self, who: Principal, since: int, limit: int) -> ChangeBatch:
        self.reads += 1
        await trio.lowlevel.checkpoint()
        if self.down:
            raise StoreUnavailable("the database is unavailable (test)")
        after = [c for c in self.changes if c.rev > since]
        page, head = after[:limit], len(self.changes)
        more = len(after) > limit
        return ChangeBatch(page, rev=page[-1].rev if more else head, more=more, horizon=self.horizon)


@dataclass
class Accounts:
    """``Accounts.authenticate`` for tokens ``good`` (expiring ``lifetime`` seconds from
    now, on the wall clock like real tokens) and nothing else."""

    lifetime: float = float("inf")
    down: bool = False
    calls: int = 0

    async def authenticate(self, token: str) -> Principal:
        self.calls += 1
        await trio.lowlevel.checkpoint()
        if self.down:
            raise StoreUnavailable("the database is unavailable (test)")
        if token != "good":
            raise Unauthenticated("this session has ended")
        return Principal(USER, SESSION, time.time() + self.lifetime)


def message(event: events.Event) -> Message:
    return Message(events.topic(event), events.encode(event))


def change_message(change: Change) -> Message:
    return message(events.TodoChanged.of(USER, change))


def revoked_message(session_id: str = SESSION) -> Message:
    session = {"id": session_id, "device": "phone"}
    return message(events.SessionChanged(USER, "revoked", session, session_id))


RESUBSCRIBED = Resubscribed()


async def ws_open(transport: MemoryTransport, token: str = "good", since: int | None = None) -> None:
    await transport.client_sends({"type": "hello", "token": token, "since": since})


async def ws_subscribe(transport: MemoryTransport) -> None:
    pass  # hello subscribes


def ws_ready(transport: MemoryTransport) -> bool:
    return bool(transport.of_type("welcome"))


def ws_revs(transport: MemoryTransport) -> list[int]:
    return [f["rev"] for f in transport.of_type("change")]


async def graphql_open(transport: MemoryTransport, token: str = "good") -> None:
    await transport.client_sends({"type": "connection_init", "payload": {"token": token}})


async def graphql_subscribe(transport: MemoryTransport) -> None:
    await transport.client_sends({
        "id": "1", "type": "subscribe",
        "payload": {"query": "subscription { todoChanged { kind rev } }"},
    })


def graphql_events(transport: MemoryTransport) -> list[dict[str, Any]]:
    return [f["payload"]["data"]["todoChanged"] for f in transport.of_type("next")]


def graphql_ready(transport: MemoryTransport) -> bool:
    return any(e["kind"] == "HEAD" for e in graphql_events(transport))


def graphql_revs(transport: MemoryTransport) -> list[int]:
    return [e["rev"] for e in graphql_events(transport) if e["kind"] == "CHANGE"]


class _Todos:
    """What a GraphQL subscription asks of ``Todos``: the change log."""

    def __init__(self, log: ChangeLog) -> None:
        self.changes = log.read


def ws_vocabulary(session: Session, log: ChangeLog) -> Vocabulary:
    return SyncSocket(session, log.read, instance="test", queue_size=LIMITS.queue_size,
                      observer=session_observer)


def graphql_vocabulary(session: Session, log: ChangeLog) -> Vocabulary:
    return GraphQLSocket(
        session, engine=ENGINE, accounts=None, todos=_Todos(log),  # type: ignore[arg-type]
        client="test", queue_size=LIMITS.queue_size,
    )


@dataclass(frozen=True)
class Protocol:
    """How a client speaks one protocol, for the rules that hold for every protocol."""

    name: str
    open: Callable[..., Awaitable[None]]  # the opening message (a token: "good" or not)
    subscribe: Callable[[MemoryTransport], Awaitable[None]]  # ask for changes, once open
    ready: Callable[[MemoryTransport], bool]  # subscribed: changes will come
    revs: Callable[[MemoryTransport], list[int]]  # revisions of the changes received
    vocabulary: Callable[[Session, ChangeLog], Vocabulary]
    auth_refused: int
    auth_timeout: int
    internal_error: int
    ping: dict[str, Any] = field(default_factory=lambda: {"type": "ping"})
    pong: dict[str, Any] = field(default_factory=lambda: {"type": "pong"})


PROTOCOLS = [
    Protocol("ws", ws_open, ws_subscribe, ws_ready, ws_revs, ws_vocabulary,
             close_codes.UNAUTHENTICATED, close_codes.UNAUTHENTICATED, close_codes.INTERNAL_ERROR),
    Protocol("graphql", graphql_open, graphql_subscribe, graphql_ready, graphql_revs,
             graphql_vocabulary, close_codes.GRAPHQL_FORBIDDEN, close_codes.GRAPHQL_INIT_TIMEOUT,
             close_codes.GRAPHQL_INTERNAL_ERROR),
]


class _Observer:
    def ws_sent(self, kind: str) -> None:
        pass

    def ws_closed(self, code: int, reason: str) -> None:
        pass

    def sync_lag(self, seconds: float) -> None:
        pass


session_observer = _Observer()
ENGINE = Engine(build_schema())
