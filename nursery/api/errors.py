"""Our errors → the JSON error shape of docs/api.md, in one place.

``{"error": {"code", "message", "details"}}`` with the error's status; 429 and 503 carry
Retry-After. Unexpected exceptions are logged and answered 500 without a stack trace.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from quart import Quart, Response
from werkzeug.exceptions import HTTPException

from nursery.errors import NurseryError, RateLimited, Unavailable

log = logging.getLogger(__name__)

_HTTP_CODES = {
    400: "malformed",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
}


def error_response(
    status: int, code: str, message: str, details: Any = None, retry_after: float | None = None
) -> Response:
    body = {"error": {"code": code, "message": message, "details": details}}
    response = Response(json_dumps(body), status=status, content_type="application/json")
    if retry_after is not None:
        response.headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return response


def json_dumps(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def install_error_handlers(app: Quart) -> None:
    @app.errorhandler(NurseryError)
    async def ours(error: NurseryError) -> Response:
        retry_after = None
        if isinstance(error, RateLimited | Unavailable):
            retry_after = error.retry_after
        if isinstance(error, Unavailable):
            log.warning("answering 503: %s", error)
        return error_response(error.status, error.code, error.message, error.details, retry_after)

    @app.errorhandler(HTTPException)
    async def http(error: HTTPException) -> Response:
        status = error.code or 500
        code = _HTTP_CODES.get(status, "http_error")
        return error_response(status, code, error.description or error.name)

    @app.errorhandler(Exception)
    async def unexpected(error: Exception) -> Response:
        log.exception("unexpected error")
        return error_response(500, "internal", "something went wrong on our side")
