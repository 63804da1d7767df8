"""/metrics (Prometheus text format), and the Quart app's part of the request metrics.

The edge records every request's metrics and log line (``edge.listener``); for the requests
it passes on to the Quart app, ``record_route`` tells it which route pattern served them.
"""

from __future__ import annotations

from typing import Any, cast

import trio
from quart import Blueprint, Quart, Response, request

from nursery.edge.asgi import ROUTE_KEY
from nursery.metrics import CONTENT_TYPE, Metrics


def metrics_blueprint(metrics: Metrics) -> Blueprint:
    bp = Blueprint("metrics", __name__)

    @bp.get("/metrics")
    async def scrape() -> Response:
        # generate_latest is synchronous and grows with the series count: off the event loop.
        body = await trio.to_thread.run_sync(metrics.render)
        return Response(body, content_type=CONTENT_TYPE)

    return bp


def record_route(app: Quart) -> None:
    @app.after_request
    async def record(response: Response) -> Response:
        if request.url_rule is not None:
            cast(dict[str, Any], request.scope)[ROUTE_KEY] = request.url_rule.rule
        return response
