"""/metrics (Prometheus text format) and the HTTP request instrumentation."""

from __future__ import annotations

import time

import trio
from quart import Blueprint, Quart, Response, g, request

from nursery.metrics import CONTENT_TYPE, Metrics


def metrics_blueprint(metrics: Metrics) -> Blueprint:
    bp = Blueprint("metrics", __name__)

    @bp.get("/metrics")
    async def scrape() -> Response:
        # generate_latest is synchronous and grows with the series count: off the event loop.
        body = await trio.to_thread.run_sync(metrics.render)
        return Response(body, content_type=CONTENT_TYPE)

    return bp


def instrument_http(app: Quart, metrics: Metrics) -> None:
    @app.before_request
    async def start_timer() -> None:
        g.started = time.perf_counter()

    @app.after_request
    async def record(response: Response) -> Response:
        started = g.get("started")
        if started is not None:
            rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
            metrics.http(rule, request.method, response.status_code, time.perf_counter() - started)
        return response
