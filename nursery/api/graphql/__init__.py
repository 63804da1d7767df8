"""GraphQL at /graphql: the REST model over HTTP (POST, GET + explorer page) and live
subscriptions over the ``graphql-transport-ws`` websocket on the same path.

The package, by job:

    schema         the SDL and its binding (Ariadne)
    resolvers      queries and mutations → the services REST uses
    subscriptions  todoChanged / sessionEvents → feeds (``service.feed``)
    arguments      validation of non-body arguments (REST's bounds)
    context        per-request services and caller (authenticated once per request)
    limits         query depth and cost limits (a validation rule)
    errors         errors → ``extensions.code`` = REST's codes
    engine         parse → validate → execute / subscribe, for both transports
    trio_execution graphql-core's executor made Trio-correct (the one place)
    endpoint       HTTP
    protocol       graphql-transport-ws messages (no I/O)
    connection     one websocket connection's lifetime
    live           the connection and its feeds in the hub
    explorer       the GET page
"""

from __future__ import annotations

from quart import Blueprint, Response, websocket

from nursery.api.transport import QuartTransport
from nursery.config import Settings
from nursery.pubsub.hub import Hub
from nursery.service.accounts import Accounts
from nursery.service.limits import parse_rate
from nursery.service.todos import Todos

from . import protocol
from .connection import GraphQLWsSession, WsLimits
from .endpoint import GraphQLEndpoint
from .engine import Engine
from .schema import build_schema


def graphql_blueprint(accounts: Accounts, todos: Todos, hub: Hub, settings: Settings) -> Blueprint:
    bp = Blueprint("graphql", __name__)
    engine = Engine(build_schema())
    endpoint = GraphQLEndpoint(
        engine, accounts, todos, trust_proxy_headers=settings.trust_proxy_headers
    )
    limits = WsLimits(
        init_timeout=settings.ws_hello_timeout,
        ping_interval=settings.ws_ping_interval,
        ping_timeout=settings.ws_ping_timeout,
        send_timeout=settings.ws_send_timeout,
        queue_size=settings.ws_queue_size,
        message_rate=parse_rate(settings.ws_message_rate),
    )

    @bp.post("/graphql")
    async def post() -> Response:
        return await endpoint.post()

    @bp.get("/graphql")
    async def get() -> Response:
        return await endpoint.get()

    @bp.websocket("/graphql")
    async def subscriptions() -> None:
        if protocol.SUBPROTOCOL not in websocket.requested_subprotocols:
            await websocket.accept()
            await websocket.close(protocol.SUBPROTOCOL_NOT_ACCEPTABLE, "Subprotocol not acceptable")
            return
        await websocket.accept(subprotocol=protocol.SUBPROTOCOL)
        session = GraphQLWsSession(
            QuartTransport(), engine=engine, accounts=accounts, todos=todos, hub=hub,
            client=_websocket_client(settings.trust_proxy_headers), limits=limits,
        )
        await session.run()

    return bp


def _websocket_client(trust_proxy_headers: bool) -> str:
    """``api.rest.client_address`` for a websocket (which has no ``request``): the same rule."""
    if trust_proxy_headers:
        forwarded = websocket.headers.get("X-Forwarded-For", "")
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        if hops:
            return hops[-1]
    return websocket.remote_addr or "unknown"
