"""One ``graphql-transport-ws`` connection: init, ack, then operations, until closed.

Transport-independent (``service.sync.Transport``: receive, send, close), like /ws's session;
``__init__`` adapts Quart's websocket. The protocol's messages are ``protocol``; the GraphQL
work is ``engine``; the feeds are ``live``.

Lifecycle: ``connection_init`` must come within ``init_timeout`` (else 4408) and carry a token
naming a live session (else 4403); a ``subscribe`` before that is 4401. Once acknowledged the
connection is a hub member (``live.joined``): the hub closes it with 1012 on shutdown and
4001 when its session is revoked; a subscription's feed closes it with 4008 when it falls
behind. A second ``connection_init`` is 4429, a reused operation id 4409, anything else that
is not a protocol message 4400, more than ``message_rate`` messages 4029 (as on /ws). The
server pings every ``ping_interval`` and closes with 4008
when nothing is heard for ``ping_timeout`` after a ping, or when a write blocks for
``send_timeout``.

Resource handling: ``run`` owns the connection's nursery: the reader, the heartbeat, and one
task per operation (at most ``max_operations``; more get an ``error`` message). Each
subscription owns a nursery inside its task for its feed, so completing an operation (the
client's ``complete``) cancels exactly its task and feed. ``run`` closes the transport with
the code chosen, or not at all when the peer already left. Memory is bounded by
``max_operations`` × (feed queue + stream buffer) plus one frame of at most
``ws_max_message_bytes`` (Hypercorn refuses larger frames with 1009).

Error handling: a store outage closes with 1013 (try again later); an unexpected exception is
logged and closes with 4500; neither reaches Quart.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, cast

import trio
from graphql import ExecutionResult, OperationType

from nursery.errors import RateLimited, StoreUnavailable, Unauthenticated, Unavailable
from nursery.pubsub.hub import Hub
from nursery.pubsub.ratelimit import Rate, gcra
from nursery.service.accounts import Accounts, Principal
from nursery.service.sync import Transport, TransportClosed
from nursery.service.todos import Todos

from . import protocol
from .context import Caller, Context
from .engine import BadRequest, Engine, GraphQLRequest, Operation, response
from .errors import error
from .live import LiveFeeds, joined

log = logging.getLogger(__name__)

NORMAL = 1000
TOO_SLOW = 4008
RATE_LIMITED = 4029
TRY_AGAIN_LATER = 1013
MESSAGE_RATE = Rate(20, 1.0)


@dataclass(frozen=True, slots=True)
class WsLimits:
    init_timeout: float = 5.0
    ping_interval: float = 20.0
    ping_timeout: float = 20.0
    send_timeout: float = 10.0
    queue_size: int = 256  # each subscription's feed (``service.feed``)
    max_operations: int = 20
    message_rate: Rate = MESSAGE_RATE  # messages a client may send; more closes with 4029


class GraphQLWsSession:
    def __init__(
        self,
        transport: Transport,
        *,
        engine: Engine,
        accounts: Accounts,
        todos: Todos,
        hub: Hub,
        client: str = "unknown",
        limits: WsLimits = WsLimits(),
    ) -> None:
        self._transport = transport
        self._engine = engine
        self._accounts = accounts
        self._todos = todos
        self._hub = hub
        self._client = client
        self._limits = limits
        self._scope = trio.CancelScope()
        self._send_lock = trio.Lock()
        self._closing: tuple[int, str] | None = None
        self._peer_gone = False
        self._last_heard = 0.0
        self._operations: dict[str, trio.CancelScope] = {}
        self._allowance: float | None = None  # GCRA state of the client's message rate

    def close(self, code: int, reason: str) -> None:
        """End the connection with this close code (the first reason given wins)."""
        if self._closing is None:
            self._closing = (code, reason)
        self._scope.cancel()

    async def run(self) -> None:
        self._last_heard = trio.current_time()
        with self._scope:
            await self._ending_on_errors(self._serve)
        if not self._peer_gone:
            code, reason = self._closing or (NORMAL, "")
            with trio.CancelScope(shield=True), trio.move_on_after(self._limits.send_timeout):
                try:
                    await self._transport.close(code, reason)
                except TransportClosed:
                    pass

    async def _ending_on_errors(self, task: Callable[..., Awaitable[None]], *args: Any) -> None:
        """Run ``task``; the errors that end a connection become its close code instead of
        propagating (sibling tasks are then cancelled by ``close``, not by an exception)."""
        try:
            await task(*args)
        except* TransportClosed:
            self._peer_gone = True
            self._scope.cancel()
        except* protocol.ProtocolError as group:
            first = cast(protocol.ProtocolError, group.exceptions[0])
            self.close(first.code, first.reason)
        except* StoreUnavailable:
            self.close(TRY_AGAIN_LATER, "the database is unavailable, try again")
        except* Unavailable as group:  # e.g. too many connections being set up at once
            self.close(TRY_AGAIN_LATER, cast(Unavailable, group.exceptions[0]).message)
        except* Exception as group:
            log.error("graphql websocket failed", exc_info=group)
            self.close(protocol.INTERNAL_ERROR, "internal server error")

    async def _serve(self) -> None:
        init = await self._receive_init()
        try:
            who = await self._accounts.authenticate(init.token)
        except Unauthenticated:
            raise protocol.ProtocolError(protocol.FORBIDDEN, "Forbidden") from None
        async with joined(self._hub, who, self.close), trio.open_nursery() as nursery:
            await self._send(protocol.connection_ack())
            nursery.start_soon(self._ending_on_errors, self._heartbeat)
            nursery.start_soon(self._ending_on_errors, self._read, who, nursery)

    async def _receive(self) -> protocol.ClientMessage:
        frame = await self._transport.receive()
        verdict, allowance = gcra(self._allowance, trio.current_time(), self._limits.message_rate)
        if not verdict.allowed:
            raise protocol.ProtocolError(RATE_LIMITED, "too many messages")
        self._allowance = allowance
        message = protocol.parse(frame)
        self._last_heard = trio.current_time()
        return message

    async def _receive_init(self) -> protocol.ConnectionInit:
        with trio.move_on_after(self._limits.init_timeout):
            while True:
                match await self._receive():
                    case protocol.ConnectionInit() as init:
                        return init
                    case protocol.Ping():
                        await self._send(protocol.PONG)
                    case protocol.Subscribe():
                        raise protocol.ProtocolError(protocol.UNAUTHORIZED, "Unauthorized")
        raise protocol.ProtocolError(protocol.INIT_TIMEOUT, "Connection initialisation timeout")

    async def _read(self, who: Principal, nursery: trio.Nursery) -> None:
        while True:
            match await self._receive():
                case protocol.ConnectionInit():
                    raise protocol.ProtocolError(
                        protocol.TOO_MANY_INITS, "Too many initialisation requests"
                    )
                case protocol.Ping():
                    await self._send(protocol.PONG)
                case protocol.Subscribe(id=op_id, payload=payload):
                    if not self._start(op_id, payload, who, nursery):
                        await self._send(protocol.error(op_id, [error(
                            f"at most {self._limits.max_operations} operations at once"
                            " on one connection", RateLimited.code,
                        )]))
                case protocol.Complete(id=op_id):
                    scope = self._operations.pop(op_id, None)
                    if scope is not None:
                        scope.cancel()  # the client stopped listening: nothing more is sent

    def _start(
        self, op_id: str, payload: dict[str, Any], who: Principal, nursery: trio.Nursery
    ) -> bool:
        """Start the operation, unless too many are running (False)."""
        if op_id in self._operations:
            raise protocol.ProtocolError(
                protocol.DUPLICATE_ID, f"Subscriber for {op_id} already exists"
            )
        try:
            request = GraphQLRequest.from_json(payload)
        except BadRequest as exc:
            raise protocol.ProtocolError(protocol.BAD_MESSAGE, str(exc)) from None
        if len(self._operations) >= self._limits.max_operations:
            return False
        scope = trio.CancelScope()
        self._operations[op_id] = scope
        nursery.start_soon(self._ending_on_errors, self._operation, op_id, request, who, scope)
        return True

    async def _operation(
        self, op_id: str, request: GraphQLRequest, who: Principal, scope: trio.CancelScope
    ) -> None:
        try:
            with scope:
                operation = self._engine.prepare(request)
                if not isinstance(operation, Operation):
                    await self._send(protocol.error(op_id, operation["errors"]))
                elif operation.kind is OperationType.SUBSCRIPTION:
                    await self._subscription(op_id, operation, who)
                else:
                    result = await self._engine.execute(operation, self._context(who))
                    await self._send(protocol.next_(op_id, result))
                    await self._send(protocol.complete(op_id))
        finally:
            if self._operations.get(op_id) is scope:
                del self._operations[op_id]

    async def _subscription(self, op_id: str, operation: Operation, who: Principal) -> None:
        async with trio.open_nursery() as feeds:
            live = LiveFeeds(
                feeds, who, self._hub,
                lambda who, since, limit: self._todos.changes(who, since, limit),
                self.close, queue_size=self._limits.queue_size,
            )
            stream = await self._engine.subscribe(operation, self._context(who, live))
            if isinstance(stream, dict):
                await self._send(protocol.error(op_id, stream["errors"]))
            else:
                generator = cast(AsyncGenerator[ExecutionResult], stream)
                async with aclosing(generator):
                    async for result in generator:
                        await self._send(protocol.next_(op_id, response(result)))
                await self._send(protocol.complete(op_id))
            feeds.cancel_scope.cancel()

    def _context(self, who: Principal, live: LiveFeeds | None = None) -> Context:
        caller = Caller.known(self._accounts, who)
        return Context(self._accounts, self._todos, caller, self._client, live)

    async def _send(self, text: str) -> None:
        async with self._send_lock:
            with trio.move_on_after(self._limits.send_timeout) as timer:
                await self._transport.send(text)
        if timer.cancelled_caught:
            self.close(TOO_SLOW, "too slow: a write timed out")
            await trio.lowlevel.checkpoint()  # raises Cancelled: the scope is cancelled

    async def _heartbeat(self) -> None:
        while True:
            await trio.sleep(self._limits.ping_interval)
            pinged_at = trio.current_time()
            await self._send(protocol.PING)
            await trio.sleep(self._limits.ping_timeout)
            if self._last_heard < pinged_at:
                self.close(TOO_SLOW, "no answer to ping")
