"""GraphQL errors → the JSON error shape, with ``extensions.code`` = the REST error codes.

One function decides, for every error a GraphQL response can carry:

- a ``NurseryError`` raised by the service layer: its ``code`` (``unauthenticated``,
  ``not_found``, ``conflict``, ``invalid_input``, ...), its message and ``details``, and
  ``retryAfter`` for 429/503 — exactly what REST puts in ``{"error": {...}}``;
- any other exception from a resolver: logged here with its stack, answered as ``internal``
  with a fixed message (never a stack trace, never the exception's text);
- an error graphql-core made itself: the code it was tagged with (``limits`` tags its own),
  else the code of the phase it came from — ``malformed`` for a document that does not parse
  (as REST's body that is not JSON), ``invalid_input`` for one that does not validate or
  whose variables do not coerce (as REST's unknown or mistyped fields).
"""

from __future__ import annotations

import logging
import math
from typing import Any

from graphql import GraphQLError

from nursery.api.errors import log_answered
from nursery.errors import MalformedInput, NurseryError, RateLimited, Unavailable

log = logging.getLogger(__name__)

MALFORMED = MalformedInput.code
INVALID = "invalid_input"
INTERNAL = "internal"
INTERNAL_MESSAGE = "something went wrong on our side"


def error(message: str, code: str, details: Any = None) -> dict[str, Any]:
    """An error built here (not by graphql-core), in the same shape."""
    extensions: dict[str, Any] = {"code": code}
    if details is not None:
        extensions["details"] = details
    return {"message": message, "extensions": extensions}


def format_error(err: GraphQLError, default_code: str = INVALID) -> dict[str, Any]:
    """The JSON form of ``err``; ``default_code`` for graphql-core's own untagged errors."""
    formatted: dict[str, Any] = dict(err.formatted)
    original = err.original_error
    if isinstance(original, NurseryError):
        formatted["message"] = original.message
        formatted["extensions"] = _extensions(original)
        log_answered(original)  # as REST logs it: a 503 a warning, a 500 of ours an error
    elif original is not None and not isinstance(original, GraphQLError):
        log.error("unexpected error in a resolver at %s", err.path, exc_info=original)
        formatted["message"] = INTERNAL_MESSAGE
        formatted["extensions"] = {"code": INTERNAL}
    else:
        extensions = dict(formatted.get("extensions") or {})
        extensions.setdefault("code", default_code)
        formatted["extensions"] = extensions
    return formatted


def _extensions(exc: NurseryError) -> dict[str, Any]:
    extensions: dict[str, Any] = {"code": exc.code}
    if exc.details is not None:
        extensions["details"] = exc.details
    if isinstance(exc, RateLimited | Unavailable):
        extensions["retryAfter"] = max(1, math.ceil(exc.retry_after))
    return extensions
