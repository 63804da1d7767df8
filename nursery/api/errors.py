"""Our errors → the JSON error shape of docs/api.md, in one place.

``{"error": {"code", "message", "details"}}`` with the error's status; 429 and 503 carry
Retry-After. Unexpected exceptions are logged and answered 500 without a stack trace. The
edge's routes use ``response_for``; the Quart app (what the edge passes on) gets the same
shape through ``install_error_handlers``.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from quart import Quart
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


def response_for(error: NurseryError) -> Response:
    if isinstance(error, Unavailable):
        log.warning("answering 503: %s", error)
    elif error.status >= 500:  # ours to fix (StoreFailed): once, with its cause
        log.error("answering %d: %s", error.status, error.message, exc_info=error)
    return error_response(error.status, error.code, error.message, error.details, _retry_after(error))


def install_error_handlers(app: Quart) -> None:
    def quart_error(status: int, code: str, message: str, details: Any = None,
                    retry_after: float | None = None) -> QuartResponse:
        body, headers = _error_parts(code, message, details, retry_after)
        return QuartResponse(body, status=status, headers=dict(headers))

    @app.errorhandler(NurseryError)
    async def ours(error: NurseryError) -> QuartResponse:
        if isinstance(error, Unavailable):
            log.warning("answering 503: %s", error)
        return quart_error(error.status, error.code, error.message, error.details,
                           _retry_after(error))

    @app.errorhandler(HTTPException)
    async def http(error: HTTPException) -> QuartResponse:
        status = error.code or 500
        return quart_error(status, _HTTP_CODES.get(status, "http_error"),
                           error.description or error.name)

    @app.errorhandler(Exception)
    async def unexpected(error: Exception) -> QuartResponse:
        log.exception("unexpected error")
        return quart_error(500, "internal", "something went wrong on our side")
