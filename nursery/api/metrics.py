"""/metrics (Prometheus text format), served by the Quart app.

The edge records every request's metrics and log line (``edge.listener``), named by the route
of its one table (``api.passed_on``: the Quart app's routes stand there too).
"""

from __future__ import annotations

import trio
from quart import Blueprint, Response

from nursery.metrics import CONTENT_TYPE, Metrics


def metrics_blueprint(metrics: Metrics) -> Blueprint:
    bp = Blueprint("metrics", __name__)

    @bp.get("/metrics")
    async def scrape() -> Response:
        # generate_latest is synchronous and grows with the series count: off the event loop.
        body = await trio.to_thread.run_sync(metrics.render)
        return Response(body, content_type=CONTENT_TYPE)

    return bp

