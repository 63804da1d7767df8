"""Our errors → the JSON error shape of docs/api.md, in one place, for both HTTP stacks.

``{"error": {"code", "message", "details"}}`` with the error's status; 429 and 503 carry
Retry-After. The edge's routes use ``response_for`` (and ``error_response`` for the edge's
own refusals, ``app.ErrorShape``); the Quart app, which the edge passes some routes on to, answers through
``install_error_handlers`` with the same responses, logged the same way (``log_answered``):
a dependency down is one warning; a failure of ours (``StoreFailed``, an unexpected
exception) is one error with its stack, tagged with the request id like every line of the
request. A path no route claims is the same 404 on either stack (``NO_ROUTE``).
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from quart import Quart, request
from quart import Response as QuartResponse
from werkzeug.exceptions import HTTPException

from nursery.edge.http import Response
from nursery.errors import NurseryError, RateLimited, Unavailable

log = logging.getLogger(__name__)

JSON = "application/json"

_HTTP_CODES = {
    400: "malformed",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
}
NO_ROUTE = "no such route"  # the message of a 404 for a path that no route claims
INTERNAL_MESSAGE = "something went wrong on our side"


def json_dumps(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def json_response(data: Any, status: int = 200) -> Response:
    return Response(status, json_dumps(data).encode(), [("content-type", JSON)])


def _error_parts(
    code: str, message: str, details: Any, retry_after: float | None
) -> tuple[bytes, list[tuple[str, str]]]:
    body = json_dumps({"error": {"code": code, "message": message, "details": details}}).encode()
    headers = [("content-type", JSON)]
    if retry_after is not None:
        headers.append(("retry-after", str(max(1, math.ceil(retry_after)))))
    return body, headers


def error_response(
    status: int, code: str, message: str, details: Any = None, retry_after: float | None = None
) -> Response:
    body, headers = _error_parts(code, message, details, retry_after)
    return Response(status, body, headers)


def _retry_after(error: NurseryError) -> float | None:
    return error.retry_after if isinstance(error, RateLimited | Unavailable) else None


def log_answered(error: NurseryError) -> None:
    """The log of an error answered to a client: a dependency down is a warning; ours to fix
    (a 5xx such as ``StoreFailed``) an error with its cause; a client's mistake nothing."""
    if isinstance(error, Unavailable):
        log.warning("answering %d: %s", error.status, error)
    elif error.status >= 500:
        log.error("answering %d: %s", error.status, error.message, exc_info=error)


def response_for(error: NurseryError) -> Response:
    log_answered(error)
    return error_response(error.status, error.code, error.message, error.details, _retry_after(error))


def install_error_handlers(app: Quart) -> None:
    """The same answers, and the same log lines, from the Quart app."""
    def quart(response: Response) -> QuartResponse:
        return QuartResponse(response.body, status=response.status, headers=dict(response.headers))

    @app.errorhandler(NurseryError)
    async def ours(error: NurseryError) -> QuartResponse:
        return quart(response_for(error))

    @app.errorhandler(HTTPException)
    async def http(error: HTTPException) -> QuartResponse:
        status = error.code or 500
        message = NO_ROUTE if status == 404 and request.url_rule is None else (
            error.description or error.name)
        return quart(error_response(status, _HTTP_CODES.get(status, "http_error"), message))

    @app.errorhandler(Exception)
    async def unexpected(error: Exception) -> QuartResponse:
        # As the edge logs its own routes' failures (``edge.listener``): once, with the stack.
        log.exception("unexpected error answering %s %s", request.method, request.path)
        return quart(error_response(500, "internal", INTERNAL_MESSAGE))
