"""The Quart app's routes in the edge's router: one table for every route, whichever stack
serves it.

The edge matches every request against its ``Router``: a route of the Quart app (GraphQL over
HTTP, the web page and its files, /metrics) stands there too, with a handler that passes the
request on (``edge.asgi.passed_on``). So every route is named in the metrics and the request
log from one table, a known path with another method is the edge's 405, and a path that no
route claims reaches the app only to get the JSON 404 (``api.errors``).
"""

from __future__ import annotations

import re

from quart import Quart

from nursery.edge.asgi import passed_on
from nursery.edge.router import Router

_PARAM = re.compile(r"<(?:(\w+):)?(\w+)>")


def app_routes(app: Quart) -> Router:
    """A router holding ``app``'s URL rules, each passed on to ``app``. A rule whose
    parameter has a converter (``<int:x>``, ``<path:x>``) is refused: the router matches
    one plain segment per parameter, as Quart's default does."""
    router = Router()
    handler = passed_on(app)
    for rule in app.url_map.iter_rules():
        converters = [c for c, _ in _PARAM.findall(rule.rule) if c and c != "string"]
        if converters:
            raise ValueError(f"{rule.rule}: the edge's router has no {converters[0]} converter")
        for method in sorted(rule.methods or ()):
            if method != "HEAD":  # the router serves HEAD with GET
                router.route(method, _PARAM.sub(r"<\2>", rule.rule))(handler)
    return router
