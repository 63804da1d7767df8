"""graphql-transport-ws: the GraphQL websocket's part of a session (its ``Vocabulary``).

The opening message is ``connection_init`` (its payload carries the token; before it a
``ping`` is answered and a ``subscribe`` is 4401); the greeting is ``connection_ack``. Then
``subscribe`` starts an operation (a query or mutation answered once, or a subscription fed by
its own feed), ``complete`` stops one, ``ping`` gets ``pong``. A second ``connection_init`` is
4429, a reused operation id 4409, anything that is not a message of the protocol 4400.
Everything else a socket obeys — authentication, expiry, revocation, keep-alive, limits,
closing — is the session's (``service.session``), as on /ws.

Resource handling: each operation is a task in the session's nursery (at most
``max_operations``; more get an ``error`` message), so it ends with the session; ``complete``
cancels exactly its task (and its feed). Memory is bounded by ``max_operations`` ×
(feed queue + stream) plus the session's outbox.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any, cast

import trio
from graphql import ExecutionResult, OperationType

from nursery.errors import RateLimited
from nursery.protocol import graphql_ws as protocol
from nursery.protocol.close_codes import (
    GRAPHQL_BAD_MESSAGE,
    GRAPHQL_DUPLICATE_ID,
    GRAPHQL_FORBIDDEN,
    GRAPHQL_INIT_TIMEOUT,
    GRAPHQL_INTERNAL_ERROR,
    GRAPHQL_TOO_MANY_INITS,
    GRAPHQL_UNAUTHORIZED,
    ProtocolError,
)
from nursery.service.accounts import Accounts, Principal
from nursery.service.feed import Feed
from nursery.service.hub import Item
from nursery.service.session import Session
from nursery.service.todos import Todos

from .context import Caller, Context
from .engine import BadRequest, Engine, GraphQLRequest, Operation, response
from .errors import error
from .live import LiveFeeds

MAX_OPERATIONS = 20


class GraphQLSocket:
    """One GraphQL websocket session's protocol: a ``service.session.Vocabulary``."""

    name = "graphql"
    ping = protocol.PING
    auth_refused = GRAPHQL_FORBIDDEN
    auth_timeout = GRAPHQL_INIT_TIMEOUT
    internal_error = GRAPHQL_INTERNAL_ERROR

    def __init__(
        self,
        session: Session,
        *,
        engine: Engine,
        accounts: Accounts,
        todos: Todos,
        client: str,
        queue_size: int,
        max_operations: int = MAX_OPERATIONS,
    ) -> None:
        self._session = session
        self._engine = engine
        self._accounts = accounts
        self._todos = todos
        self._client = client
        self._queue_size = queue_size
        self._max_operations = max_operations
        self._who: Principal | None = None
        self._operations: dict[str, trio.CancelScope] = {}
        self._feeds: set[Feed] = set()  # every subscription's, offered every hub event

    def opening(self, message: str | bytes) -> str | None:
        match protocol.parse(message):
            case protocol.ConnectionInit(token=token):
                return token or ""
            case protocol.Ping():
                self._session.send(protocol.PONG, "pong")
            case protocol.Subscribe():
                raise ProtocolError(GRAPHQL_UNAUTHORIZED, "Unauthorized")
        return None

    async def start(self, who: Principal) -> None:
        self._who = who
        self._session.send(protocol.connection_ack(), "ack")

    def receive(self, message: str | bytes) -> None:
        match protocol.parse(message):
            case protocol.ConnectionInit():
                raise ProtocolError(GRAPHQL_TOO_MANY_INITS, "Too many initialisation requests")
            case protocol.Ping():
                self._session.send(protocol.PONG, "pong")
            case protocol.Subscribe(id=op_id, payload=payload):
                self._subscribe(op_id, payload)
            case protocol.Complete(id=op_id):
                scope = self._operations.pop(op_id, None)
                if scope is not None:
                    scope.cancel()  # the client stopped listening: nothing more is sent

    def offer(self, item: Item) -> None:
        for feed in list(self._feeds):
            feed.offer(item)

    async def settle(self) -> None:
        pass  # subscriptions run their feeds in their own tasks

    def _subscribe(self, op_id: str, payload: dict[str, Any]) -> None:
        if op_id in self._operations:
            raise ProtocolError(GRAPHQL_DUPLICATE_ID, f"Subscriber for {op_id} already exists")
        try:
            request = GraphQLRequest.from_json(payload)
        except BadRequest as exc:
            raise ProtocolError(GRAPHQL_BAD_MESSAGE, str(exc)) from None
        if len(self._operations) >= self._max_operations:
            self._session.send(protocol.error(op_id, [error(
                f"at most {self._max_operations} operations at once on one connection",
                RateLimited.code,
            )]), "error")
            return
        scope = trio.CancelScope()
        self._operations[op_id] = scope
        assert self._session.nursery is not None
        self._session.nursery.start_soon(self._operation, op_id, request, scope)

    async def _operation(self, op_id: str, request: GraphQLRequest, scope: trio.CancelScope) -> None:
        try:
            with scope:
                operation = self._engine.prepare(request)
                if not isinstance(operation, Operation):
                    self._session.send(protocol.error(op_id, operation["errors"]), "error")
                elif operation.kind is OperationType.SUBSCRIPTION:
                    await self._subscription(op_id, operation)
                else:
                    result = await self._engine.execute(operation, self._context())
                    await self._session.send_flowing(protocol.next_(op_id, result), "next")
                    self._session.send(protocol.complete(op_id), "complete")
        finally:
            if self._operations.get(op_id) is scope:
                del self._operations[op_id]

    async def _subscription(self, op_id: str, operation: Operation) -> None:
        assert self._who is not None
        async with trio.open_nursery() as feeds:
            live = LiveFeeds(
                feeds, self._who, self._todos.changes, self._feeds, self._session.close,
                queue_size=self._queue_size,
            )
            stream = await self._engine.subscribe(operation, self._context(live))
            if isinstance(stream, dict):
                self._session.send(protocol.error(op_id, stream["errors"]), "error")
            else:
                generator = cast(AsyncGenerator[ExecutionResult], stream)
                async with aclosing(generator):
                    async for result in generator:
                        await self._session.send_flowing(
                            protocol.next_(op_id, response(result)), "next"
                        )
                self._session.send(protocol.complete(op_id), "complete")
            feeds.cancel_scope.cancel()

    def _context(self, live: LiveFeeds | None = None) -> Context:
        assert self._who is not None
        caller = Caller.known(self._accounts, self._who)
        return Context(self._accounts, self._todos, caller, self._client, live)
