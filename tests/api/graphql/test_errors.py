"""What a client gets for documents and requests that cannot run: GraphQL errors with REST's
codes and statuses of GraphQL over HTTP, never a 500 nor a stack trace; and the limits."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio
from graphql import GraphQLError, get_introspection_query

from nursery.api.graphql.errors import format_error
from nursery.api.graphql.limits import QueryLimits
from nursery.errors import Conflict
from tests.api.graphql.support import Gql, assert_no_leak


def codes(body: dict[str, Any]) -> set[str]:
    return {e["extensions"]["code"] for e in body["errors"]}


async def test_malformed_documents_are_malformed(gql: Gql) -> None:
    with trio.fail_after(10):
        for document in ("{", "{ me { id }", "query {}}", "mutation", "{ me(", "\x00", "}{"):
            body = await gql.post(document)
            assert "data" not in body and codes(body) == {"malformed"}, (document, body)
            assert body["errors"][0]["message"].startswith("Syntax Error"), body
        # Nested beyond what the parser follows: still an answer, not a crash.
        body = await gql.post("{" + "a{" * 5000 + "b" + "}" * 5001)
        assert codes(body) == {"malformed"}, body


async def test_unknown_fields_and_types_are_invalid_input(gql: Gql) -> None:
    with trio.fail_after(10):
        user = await gql.register()
        for document in (
            "{ me { password } }",
            "{ nothing }",
            "{ todos(limit: 5) { rev } }",
            "{ todos { nodes } }",
            '{ todo(id: 5.5) { id } }',
            "query($x: Nope) { me { id } }",
            "query { me { id } } query { me { email } }",
            "{ me { id ...on Todo { title } } }",
            "{ me @defer { id } }",
        ):
            body = await gql.post(document, user=user)
            assert "data" not in body and codes(body) == {"invalid_input"}, (document, body)
        body = await gql.post("query A { me { id } } query B { me { email } }", user=user)
        assert codes(body) == {"invalid_input"}, body
        assert "operationName" in body["errors"][0]["message"]


async def test_requests_that_are_not_graphql_requests_are_400(gql: Gql) -> None:
    with trio.fail_after(10):
        for content in (b"not json", b"[]", b"{}", b'{"query": 5}', b'{"query": ""}',
                        b'{"query": "{ me { id } }", "variables": []}', b"\xff\xfe",
                        b'{"query": "{ me { id } }", "operationName": 7}', b"[" * 60_000):
            r = await gql.api.client.post("/graphql", content=content,
                                          headers={"Content-Type": "application/json"})
            assert r.status_code == 400, (content[:40], r.status_code, r.text)
            assert codes(r.json()) == {"malformed"}, r.text
            assert_no_leak(r.text)


async def test_a_body_over_the_limit_is_413(gql: Gql) -> None:
    with trio.fail_after(10):
        big = {"query": "{ me { id } }", "variables": {"pad": "x" * (gql.api.instance.settings.max_body_bytes + 1)}}
        r = await gql.api.client.post("/graphql", json=big)
        assert r.status_code == 413, r.text
        assert codes(r.json()) == {"too_large"}


async def test_introspection_is_allowed(gql: Gql) -> None:
    with trio.fail_after(10):
        data = await gql.data(get_introspection_query(descriptions=True))
        names = {t["name"] for t in data["__schema"]["types"]}
        assert {"Query", "Mutation", "Subscription", "Todo", "TodoConnection", "DateTime"} <= names
        assert (await gql.data('{ __type(name: "Todo") { fields { name } } }'))["__type"]["fields"]


async def test_over_deep_queries_are_refused_before_running(gql: Gql) -> None:
    with trio.fail_after(10):
        max_depth = QueryLimits().max_depth
        nested = "{ __schema { types { fields { type { " + "ofType { " * 12 + "name" + " }" * 16 + " }"
        body = await gql.post(nested)
        assert "data" not in body and codes(body) == {"too_large"}, body
        details = body["errors"][0]["extensions"]["details"]
        assert details["maxDepth"] == max_depth and details["depth"] > max_depth
        assert "deep" in body["errors"][0]["message"]
        # The classic cycle through introspection, hidden in fragments.
        cyclic = ("query { __schema { types { ...F } } } fragment F on __Type { fields { type { ...G } } } "
                  "fragment G on __Type { fields { type { fields { type { fields { type { fields { type "
                  "{ fields { type { fields { type { name } } } } } } } } } } } } }")
        assert "too_large" in codes(await gql.post(cyclic))  # (graphql-core adds its own error)


async def test_over_costly_queries_are_refused_before_running(gql: Gql) -> None:
    with trio.fail_after(10):
        user = await gql.register()
        page = "todos(first: 200) { nodes { id title notes done due tags rev createdAt updatedAt } }"
        aliases = " ".join(f"p{i}: {page}" for i in range(30))
        body = await gql.post(f"{{ {aliases} }}", user=user)
        assert "data" not in body and codes(body) == {"too_large"}, body
        error = body["errors"][0]
        assert error["extensions"]["details"]["cost"] > error["extensions"]["details"]["maxCost"]
        assert "smaller pages" in error["message"]
        # Through a variable: its value counts; a missing one counts as the largest page.
        fields = "id title notes done due tags rev createdAt updatedAt"
        document = f"query($n: Int) {{ {' '.join(f'p{i}: todos(first: $n) {{ nodes {{ {fields} }} }}' for i in range(30))} }}"
        assert "errors" not in await gql.post(document, {"n": 5}, user)
        assert codes(await gql.post(document, {}, user)) == {"too_large"}
        # Big but within the limits: fine.
        assert "errors" not in await gql.post(f"{{ {page} changes(limit: 1000) {{ changes {{ rev todo {{ id }} }} }} }}", user=user)


async def test_variables_of_the_wrong_type_are_invalid_input(gql: Gql) -> None:
    with trio.fail_after(10):
        user = await gql.register()
        body = await gql.post("query($n: Int) { todos(first: $n) { rev } }", {"n": "ten"}, user)
        assert "data" not in body and codes(body) == {"invalid_input"}, body
        body = await gql.post("query($id: ID!) { todo(id: $id) { id } }", {}, user)
        assert "data" not in body and codes(body) == {"invalid_input"}, body


async def test_get_runs_queries_refuses_mutations_and_serves_the_explorer(gql: Gql) -> None:
    with trio.fail_after(10):
        user = await gql.register()
        r = await gql.api.client.get("/graphql", params={"query": "{ me { id } }"}, headers=user.headers)
        assert r.status_code == 200 and r.json() == {"data": {"me": {"id": user.user_id}}}
        r = await gql.api.client.get("/graphql", params={"query": "query($n: Int) { todos(first: $n) { rev } }",
                                                         "variables": '{"n": 2}'}, headers=user.headers)
        assert r.json() == {"data": {"todos": {"rev": 0}}}
        r = await gql.api.client.get("/graphql", params={"query": "mutation { logout }"}, headers=user.headers)
        assert r.status_code == 405 and r.headers["allow"] == "POST" and codes(r.json()) == {"invalid_input"}
        assert (await gql.data("{ me { id } }", user=user))["me"]  # the session is still live
        r = await gql.api.client.get("/graphql", params={"query": "{ me { id } }", "variables": "{"})
        assert r.status_code == 400
        r = await gql.api.client.get("/graphql")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert "graphql-transport-ws" in r.text and "type Query" in r.text
        assert "<script src" not in r.text and "https://" not in r.text and "//cdn" not in r.text


async def test_subscriptions_over_http_are_refused(gql: Gql) -> None:
    with trio.fail_after(10):
        body = await gql.post("subscription { todoChanged { rev } }")
        assert "data" not in body and codes(body) == {"invalid_input"}
        assert "graphql-transport-ws" in body["errors"][0]["message"]


def test_unexpected_errors_are_logged_and_answered_without_detail(caplog: pytest.LogCaptureFixture) -> None:
    failure = GraphQLError("boom at /secret/path.py line 3", path=["me"],
                           original_error=RuntimeError("boom at /secret/path.py line 3"))
    with caplog.at_level(logging.ERROR):
        formatted = format_error(failure)
    assert formatted["message"] == "something went wrong on our side"
    assert formatted["extensions"] == {"code": "internal"} and formatted["path"] == ["me"]
    assert "secret" not in str(formatted)
    assert "boom" in caplog.text  # the operator sees it


def test_service_errors_keep_their_code_message_and_details() -> None:
    failure = GraphQLError("x", path=["updateTodo"], original_error=Conflict("rev mismatch", details={"rev": 3}))
    assert format_error(failure) == {
        "message": "rev mismatch", "path": ["updateTodo"],
        "extensions": {"code": "conflict", "details": {"rev": 3}},
    }
