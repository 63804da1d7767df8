"""GraphQL over HTTP at /graphql: POST runs any query or mutation; GET runs a query given as
``?query=`` (never a mutation: 405) or, without one, serves the explorer page.

Statuses follow GraphQL over HTTP for ``application/json``: 200 for every well-formed GraphQL
request, whatever errors its response holds (field errors carry their code in
``extensions.code``); 400 when the body is not a GraphQL request at all (not JSON, no
``query``), 413 when it is larger than ``max_body_bytes``, 405 for a mutation over GET.
Subscriptions are refused here (they need the websocket on the same path). Auth:
``Authorization: Bearer <token>``, checked once per request on the first field that needs it.
"""

from __future__ import annotations

import json
from typing import Any

from graphql import OperationType
from quart import Response, request

from nursery.api.errors import json_dumps
from nursery.edge.peers import client_address
from nursery.protocol.graphql_ws import bearer_token
from nursery.service.accounts import Accounts
from nursery.service.todos import Todos

from .context import Caller, Context
from .engine import BadRequest, Engine, GraphQLRequest, Operation
from .errors import INVALID, MALFORMED, error
from .explorer import CSP, explorer_page


def _json(body: dict[str, Any], status: int = 200, **headers: str) -> Response:
    return Response(json_dumps(body), status=status, content_type="application/json",
                    headers=headers)


def _refused(status: int, message: str, code: str, **headers: str) -> Response:
    return _json({"errors": [error(message, code)]}, status, **headers)


class GraphQLEndpoint:
    def __init__(
        self, engine: Engine, accounts: Accounts, todos: Todos, *, trust_proxy_headers: bool
    ) -> None:
        self._engine = engine
        self._accounts = accounts
        self._todos = todos
        self._trust_proxy_headers = trust_proxy_headers
        self._page = explorer_page(engine.schema)

    async def post(self) -> Response:
        body = await request.get_data()  # never over max_body_bytes: the edge refused it (413)
        try:
            graphql_request = GraphQLRequest.from_json(json.loads(body))
        except json.JSONDecodeError as exc:
            return _refused(400, f"the body is not valid JSON: {exc.msg} at line {exc.lineno} "
                                 f"column {exc.colno}", MALFORMED)
        except (ValueError, RecursionError):
            return _refused(400, "the body must be a JSON object", MALFORMED)
        except BadRequest as exc:
            return _refused(400, str(exc), MALFORMED)
        return await self._run(graphql_request, mutations=True)

    async def get(self) -> Response:
        if "query" not in request.args:
            return Response(self._page, content_type="text/html; charset=utf-8",
                            headers={"Content-Security-Policy": CSP})
        try:
            variables = json.loads(request.args.get("variables") or "null")
            graphql_request = GraphQLRequest.from_json({
                "query": request.args["query"],
                "variables": variables,
                "operationName": request.args.get("operationName"),
            })
        except (ValueError, RecursionError):
            return _refused(400, "`variables` must be JSON", MALFORMED)
        except BadRequest as exc:
            return _refused(400, str(exc), MALFORMED)
        return await self._run(graphql_request, mutations=False)

    async def _run(self, graphql_request: GraphQLRequest, *, mutations: bool) -> Response:
        operation = self._engine.prepare(graphql_request)
        if not isinstance(operation, Operation):
            return _json(operation)
        if operation.kind is OperationType.SUBSCRIPTION:
            return _json({"errors": [error(
                "subscriptions are served over the graphql-transport-ws websocket at /graphql",
                INVALID,
            )]})
        if operation.kind is OperationType.MUTATION and not mutations:
            return _refused(405, "mutations must be sent with POST", INVALID, Allow="POST")
        header = request.headers.get("Authorization")
        caller = Caller(self._accounts, bearer_token(header) if header else None)
        client = client_address(
            request.headers.get("X-Forwarded-For"), request.remote_addr, self._trust_proxy_headers
        )
        context = Context(self._accounts, self._todos, caller, client)
        return _json(await self._engine.execute(operation, context))
