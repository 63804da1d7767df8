"""One GraphQL request, whatever carried it: parse → validate (with limits) → execute or
subscribe. Shared by HTTP and the websocket; knows neither.

``prepare`` does everything that needs no I/O and returns the operation ready to run or the
errors that refuse it, so transports can check the operation's kind (HTTP refuses
subscriptions, GET refuses mutations) before anything runs. Results come back as the JSON
dicts of the GraphQL response (``{"data": ..., "errors": [...]}``), errors formatted by
``errors.format_error``.
"""

from __future__ import annotations

from collections.abc import AsyncIterable
from dataclasses import dataclass
from typing import Any

from graphql import (
    DocumentNode,
    ExecutionResult,
    GraphQLError,
    GraphQLSchema,
    OperationType,
    get_operation_ast,
    parse,
    specified_rules,
    validate,
)

from . import trio_execution
from .context import Context
from .errors import INVALID, MALFORMED, error, format_error
from .limits import TOO_LARGE, QueryLimits, limits_rule

MAX_VALIDATION_ERRORS = 20
MAX_OPERATION_NAME = 200
DEFAULT_LIMITS = QueryLimits()


class BadRequest(Exception):
    """The request is not a GraphQL request at all (no query text, variables not an object)."""


@dataclass(frozen=True, slots=True)
class GraphQLRequest:
    query: str
    variables: dict[str, Any] | None = None
    operation_name: str | None = None

    @classmethod
    def from_json(cls, body: Any) -> GraphQLRequest:
        """From a decoded JSON body or websocket payload; raises ``BadRequest``."""
        if not isinstance(body, dict):
            raise BadRequest("a GraphQL request is a JSON object")
        query, variables, name = body.get("query"), body.get("variables"), body.get("operationName")
        if not isinstance(query, str) or not query.strip():
            raise BadRequest("`query` must be the text of a GraphQL document")
        if variables is not None and not isinstance(variables, dict):
            raise BadRequest("`variables` must be an object")
        if name is not None and not (isinstance(name, str) and len(name) <= MAX_OPERATION_NAME):
            raise BadRequest("`operationName` must be a string")
        return cls(query, variables, name or None)


@dataclass(frozen=True, slots=True)
class Operation:
    request: GraphQLRequest
    document: DocumentNode
    kind: OperationType


Response = dict[str, Any]


class Engine:
    def __init__(self, schema: GraphQLSchema, limits: QueryLimits = DEFAULT_LIMITS) -> None:
        self.schema = schema
        self.limits = limits

    def prepare(self, request: GraphQLRequest) -> Operation | Response:
        """The operation to run, or the response (errors only) that refuses it."""
        try:
            document = parse(request.query, max_tokens=self.limits.max_tokens)
        except GraphQLError as exc:
            return {"errors": [format_error(exc, MALFORMED)]}
        rules = [*specified_rules, limits_rule(self.limits, request.variables)]
        try:
            problems = validate(self.schema, document, rules, max_errors=MAX_VALIDATION_ERRORS)
        except RecursionError:  # fragments spread in a chain too long to follow
            return {"errors": [error("the document is nested too deeply", TOO_LARGE)]}
        if problems:
            return {"errors": [format_error(p, INVALID) for p in problems]}
        definition = get_operation_ast(document, request.operation_name)
        if definition is None:
            message = (
                f"the document has no operation named {request.operation_name!r}"
                if request.operation_name
                else "the document has several operations: name one in operationName"
            )
            return {"errors": [error(message, INVALID)]}
        return Operation(request, document, definition.operation)

    async def execute(self, operation: Operation, context: Context) -> Response:
        """Run a query or mutation. Resolver errors become errors of the response."""
        result = await trio_execution.execute(
            self.schema,
            operation.document,
            context_value=context,
            variable_values=operation.request.variables,
            operation_name=operation.request.operation_name,
        )
        return response(result)

    async def subscribe(
        self, operation: Operation, context: Context
    ) -> AsyncIterable[ExecutionResult] | Response:
        """Start a subscription: its stream (format each result with ``response``; iterate
        and close it in one task), or the response (errors only) that refused it."""
        result = await trio_execution.subscribe(
            self.schema,
            operation.document,
            context_value=context,
            variable_values=operation.request.variables,
            operation_name=operation.request.operation_name,
        )
        if isinstance(result, ExecutionResult):
            return response(result)
        return result


def response(result: ExecutionResult) -> Response:
    body: Response = {"data": result.data}
    if result.errors:
        body["errors"] = [format_error(e, INVALID) for e in result.errors]
    if result.data is None and result.errors and not _started(result):
        del body["data"]  # a request error (variables): execution never started
    return body


def _started(result: ExecutionResult) -> bool:
    return any(e.path for e in result.errors or ())
