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
    connection     the websocket's messages (a session ``Vocabulary``)
    live           a subscription's feed
    explorer       the GET page
"""

from __future__ import annotations

from quart import Blueprint, Response

from nursery.config import Settings
from nursery.edge.http import Request
from nursery.edge.peers import client_address
from nursery.edge.router import Router, SocketOutcome
from nursery.edge.websocket import WebSocket
from nursery.protocol import graphql_ws
from nursery.protocol.close_codes import GRAPHQL_SUBPROTOCOL_NOT_ACCEPTABLE
from nursery.service.accounts import Accounts
from nursery.service.hub import Hub
from nursery.service.session import Session, SessionLimits, SessionObserver
from nursery.service.todos import Todos

from .connection import GraphQLSocket
from .endpoint import GraphQLEndpoint
from .engine import Engine
from .schema import build_schema

PATH = "/graphql"  # over HTTP (the Quart app) and as a websocket (the edge)

def graphql_blueprint(engine: Engine, accounts: Accounts, todos: Todos, settings: Settings) -> Blueprint:
    """GraphQL over HTTP, served by the Quart app."""
    bp = Blueprint("graphql", __name__)
    endpoint = GraphQLEndpoint(
        engine, accounts, todos, trust_proxy_headers=settings.trust_proxy_headers
    )

    @bp.post(PATH)
    async def post() -> Response:
        return await endpoint.post()

    @bp.get(PATH)
    async def get() -> Response:
        return await endpoint.get()

    return bp


def graphql_router(
    engine: Engine, accounts: Accounts, todos: Todos, hub: Hub, *, settings: Settings,
    limits: SessionLimits, observer: SessionObserver,
) -> Router:
    """The ``graphql-transport-ws`` websocket on /graphql, served by the edge."""
    router = Router()

    @router.websocket(PATH, subprotocol=graphql_ws.SUBPROTOCOL,
                      unacceptable_code=GRAPHQL_SUBPROTOCOL_NOT_ACCEPTABLE, plain_http=True)
    async def subscriptions(request: Request, ws: WebSocket) -> SocketOutcome:
        session = Session(
            ws, authenticate=accounts.authenticate, hub=hub, limits=limits, observer=observer
        )
        client = client_address(
            request.headers.get("x-forwarded-for"), request.client[0], settings.trust_proxy_headers
        )
        vocabulary = GraphQLSocket(
            session, engine=engine, accounts=accounts, todos=todos, client=client,
            queue_size=limits.queue_size,
        )
        code, reason = await session.run(vocabulary)
        request.who = session.who
        return SocketOutcome(code, reason, session.frames_in, session.frames_out)

    return router


__all__ = ["Engine", "build_schema", "graphql_blueprint", "graphql_router"]
