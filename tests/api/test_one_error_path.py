"""Two HTTP stacks, one face: a route served by the edge and a route it passes on to the Quart
app answer an unknown path, a wrong method and a failure alike, log a failure once with its
request id, and are named in the metrics from one route table."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
import trio
from quart import Blueprint
from quart_trio import QuartTrio

from nursery import logs, ports
from nursery.api.errors import install_error_handlers, json_response
from nursery.api.passed_on import app_routes
from nursery.api.security import Hardening
from nursery.app import ErrorShape
from nursery.edge import Edge, EdgeLimits, Request, Response, Router
from nursery.errors import StoreFailed
from nursery.metrics import Metrics
from tests.api.support import Api, error_of

NO_ROUTE = {"error": {"code": "not_found", "message": "no such route", "details": None}}
INTERNAL = {"error": {"code": "internal", "message": "something went wrong on our side", "details": None}}


@asynccontextmanager
async def two_stacks(metrics: Metrics) -> AsyncIterator[httpx.AsyncClient]:
    """An edge with routes of its own (``/edge/...``) and a Quart app behind it (``/app/...``),
    wired as ``nursery.app`` wires them; each stack has a route that fails unexpectedly and
    one whose store failed."""
    edge_routes = Router()

    @edge_routes.get("/edge/ok/<name>")
    async def edge_ok(request: Request, name: str) -> Response:
        return json_response({"name": name})

    @edge_routes.get("/edge/bug")
    async def edge_bug(request: Request) -> Response:
        raise RuntimeError("a bug on the edge's route")

    @edge_routes.get("/edge/store")
    async def edge_store(request: Request) -> Response:
        raise StoreFailed("the schema is broken")

    app = QuartTrio(__name__, static_folder=None)
    install_error_handlers(app)
    routes = Blueprint("routes", __name__)

    @routes.get("/app/ok/<name>")
    async def app_ok(name: str) -> dict[str, str]:
        return {"name": name}

    @routes.get("/app/bug")
    async def app_bug() -> None:
        raise RuntimeError("a bug on the app's route")

    @routes.get("/app/store")
    async def app_store() -> None:
        raise StoreFailed("the schema is broken")

    app.register_blueprint(routes)
    edge_routes.include(app_routes(app))
    edge = Edge(edge_routes, app, limits=EdgeLimits(), hardening=Hardening(frozenset()),
                errors=ErrorShape(graphql_paths=frozenset()), metrics=metrics,
                draining=lambda: False)
    async with trio.open_nursery() as nursery:
        (url,) = await nursery.start(edge.serve, ports.listen("127.0.0.1", 0))
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            yield client
        nursery.cancel_scope.cancel()


async def test_an_unknown_route_is_the_same_json_404_on_either_stack(api: Api) -> None:
    with trio.fail_after(10):
        user = await api.register()
        for method, path in [("GET", "/api/nope"), ("POST", "/api/nope"), ("GET", "/nope"),
                             ("DELETE", "/api/todos/x/y"), ("GET", "/static/x")]:
            r = await api.client.request(method, path, headers=user.headers)
            error_of(r, 404, "not_found")
            assert r.json() == NO_ROUTE, (method, path, r.text)
        # A known route of the Quart app with another method: the edge's 405, with Allow.
        r = await api.client.put("/metrics", json={})
        error_of(r, 405, "method_not_allowed")
        assert "GET" in r.headers["allow"].replace(" ", "").split(",")


async def test_a_failure_answers_and_logs_once_with_its_request_id_on_either_stack(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logs.tag_records()
    caplog.set_level(logging.WARNING)
    with trio.fail_after(20):
        async with two_stacks(Metrics()) as client:
            for path in ("/edge/bug", "/app/bug", "/edge/store", "/app/store"):
                caplog.clear()
                r = await client.get(path, headers={"X-Request-ID": f"rid{path.replace('/', '-')}"})
                assert r.status_code == 500 and r.json()["error"]["code"] == "internal", r.text
                if path.endswith("bug"):
                    assert r.json() == INTERNAL
                assert r.headers["x-request-id"] == f"rid{path.replace('/', '-')}"
                errors = [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
                assert len(errors) == 1, (path, [e.getMessage() for e in errors])
                (error,) = errors
                assert error.rid == r.headers["x-request-id"], path  # type: ignore[attr-defined]
                assert error.exc_info is not None, path
                if path.endswith("bug"):
                    assert error.getMessage() == f"unexpected error answering GET {path}"
                else:
                    assert error.getMessage() == "answering 500: the schema is broken"


async def test_every_route_is_named_from_one_table(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger=logs.ACCESS)
    metrics = Metrics()
    with trio.fail_after(20):
        async with two_stacks(metrics) as client:
            for path in ("/edge/ok/a", "/app/ok/b", "/unknown/c"):
                await client.get(path)
    named = {r.fields["path"]: r.fields["route"] for r in caplog.records  # type: ignore[attr-defined]
             if r.name == logs.ACCESS and r.fields.get("event") == "http"}  # type: ignore[attr-defined]
    assert named == {"/edge/ok/a": "/edge/ok/<name>", "/app/ok/b": "/app/ok/<name>",
                     "/unknown/c": "unmatched"}
    rendered = metrics.render().decode()
    for route in ("/edge/ok/<name>", "/app/ok/<name>", "unmatched"):
        assert f'route="{route}"' in rendered, route
