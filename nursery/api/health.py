"""Liveness, readiness, and the API's description (/openapi.json), served by the edge.

/healthz: the process answers. /readyz: this instance should get traffic: not draining and the
database answers (503 with Retry-After otherwise, so Caddy's health check moves traffic away).
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from nursery.api.errors import error_response, json_response
from nursery.api.openapi import openapi_document
from nursery.edge.http import Request, Response
from nursery.edge.router import Router
from nursery.errors import StoreUnavailable
from nursery.stores.base import Store

READY_CHECK_TIMEOUT = 2.0


def health_router(store: Store, draining: Callable[[], bool], instance: str) -> Router:
    health = Router()
    document = openapi_document()

    @health.get("/healthz")
    async def healthz(request: Request) -> Response:
        return json_response({"status": "ok", "instance": instance})

    @health.get("/openapi.json")
    async def openapi(request: Request) -> Response:
        return json_response(document)

    @health.get("/readyz")
    async def readyz(request: Request) -> Response:
        if draining():
            return error_response(503, "draining", "this instance is shutting down", retry_after=1)
        try:
            with trio.fail_after(READY_CHECK_TIMEOUT):
                await store.ping()
        except (StoreUnavailable, trio.TooSlowError):
            return error_response(503, "store_unavailable", "the database is unavailable", retry_after=2)
        return json_response({"status": "ready", "instance": instance})

    return health
