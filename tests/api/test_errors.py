"""Bad input of every kind gets a 4xx in the JSON error shape, never a 500."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import trio

from tests.api.support import Api, error_of, fields_of
from tests.harness import start_instance

MALFORMED_BODIES = [
    b"",
    b"{",
    b"not json",
    b'{"title": "x",}',
    b'{"title": "x"} trailing',
    b"\xff\xfe\xfd",
    b'{"title": "caf\xe9"}',  # Latin-1, not UTF-8
    b"[]",
    b'[{"title": "x"}]',
    b"null",
    b'"a string"',
    b"42",
    b"true",
    b"[" * 10_000 + b"]" * 10_000,  # deeper than any parser should recurse
]

# Well-formed JSON objects with hostile values: 400 or 422, never 500.
HOSTILE_TODOS = [
    {"title": 10**400},
    {"title": "x", "tags": [10**400]},
    {"title": None, "notes": None, "done": None, "due": None, "tags": None},
    {"title": "a\u0000b"},
    {"title": "x", "notes": "\u0000"},
    {"title": "x", "tags": ["\u0000"]},
    {"title": "x", "due": "0001-01-01T00:00:00+14:00"},
    {"title": "x", "due": "9999-12-31T23:59:59-14:00"},
    {"title": "x", "due": 10**20},
    {"title": "x", "due": ""},
    {"title": {"nested": {"deep": [1, 2, 3]}}},
    {"title": "x", "if_rev": 10**30},
    {"": "empty key"},
]
HOSTILE_RAW = [
    b'{"title": "\\ud800"}',  # a lone surrogate
    b'{"title": "\\udfff\\ud800"}',
    b'{"title": "a", "title": "b"}',
    b'{"title": NaN}',
    b'{"title": "x", "done": 1e999}',
    b'{"title": "x", "tags": [-1e999]}',
    b'{"title": "x", "done": 1' + b"0" * 5000 + b"}",
]
HOSTILE_CREDENTIALS = [
    {"email": "a\u0000b@example.com", "password": "long enough password"},
    {"email": "ab@example.com", "password": "long enough \u0000 password"},
    {"email": "ab@example.com", "password": "long enough password", "device": "\u0000"},
    {"email": "ab@example.com", "password": "long enough password", "device": None},
    {"email": "ab@example.com", "password": "p" * 100_000},
    {"email": "ab@exam\u0000ple.com" * 3, "password": "x"},
    {"email": ["ab@example.com"], "password": "long enough password"},
    {"email": "é@ü.ß", "password": "long enough password"},
]


def assert_client_error(r: httpx.Response, what: object) -> None:
    assert 400 <= r.status_code < 500, (what, r.status_code, r.text)
    error_of(r, r.status_code)


async def test_malformed_bodies_are_400(api: Api) -> None:
    with trio.fail_after(20):
        user = await api.register()
        todo = await api.create(user)
        for path, method in [
            ("/api/auth/register", "POST"),
            ("/api/auth/login", "POST"),
            ("/api/todos", "POST"),
            (f"/api/todos/{todo['id']}", "PATCH"),
        ]:
            for body in MALFORMED_BODIES:
                r = await api.client.request(
                    method, path, content=body, headers={**user.headers, "Content-Type": "application/json"}
                )
                error_of(r, 400, "malformed")
        r = await api.client.get(f"/api/todos/{todo['id']}", headers=user.headers)
        assert r.json()["todo"] == todo
        assert len(await api.all_todos(user)) == 1


async def test_hostile_values_never_cause_a_500(api: Api) -> None:
    with trio.fail_after(30):
        user = await api.register()
        todo = await api.create(user)
        path = f"/api/todos/{todo['id']}"
        for body in HOSTILE_TODOS:
            assert_client_error(await api.client.post("/api/todos", json=body, headers=user.headers), body)
            patch = {k: v for k, v in body.items() if k != "title"} or body
            assert_client_error(await api.client.patch(path, json=patch, headers=user.headers), patch)
        for body, field in (({"title": "a\u0000b"}, "title"), ({"title": "x", "tags": ["\u0000"]}, "tags"),
                            ({"title": "x", "due": "9999-12-31T23:59:59-14:00"}, "due")):
            r = await api.client.post("/api/todos", json=body, headers=user.headers)
            assert fields_of(error_of(r, 422, "invalid_input")) == {field}, body
        # The extremes that are storable are stored.
        for due in ("0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "0001-01-01T00:00:00"):
            r = await api.client.post("/api/todos", json={"title": "x", "due": due}, headers=user.headers)
            assert r.status_code == 201, r.text
            assert r.json()["todo"]["due"].startswith(due.rstrip("Z")), r.text
        for raw in HOSTILE_RAW:
            headers = {**user.headers, "Content-Type": "application/json"}
            r = await api.client.post("/api/todos", content=raw, headers=headers)
            if r.status_code != 201:  # duplicate keys: the last one wins, as in JSON parsers
                assert_client_error(r, raw)
            r = await api.client.patch(path, content=raw, headers=headers)
            if r.status_code != 200:
                assert_client_error(r, raw)
        for body in HOSTILE_CREDENTIALS:
            assert_client_error(await api.client.post("/api/auth/login", json=body), body)
            r = await api.client.post("/api/auth/register", json=body)
            if r.status_code != 201:  # an unusual but valid address may register
                assert_client_error(r, body)
        # Query strings and paths.
        for params in (
            {"q": "\u0000"},
            {"q": "%\u0000%"},
            {"done": "\u0000"},
            {"limit": "\u0000"},
            {"limit": "１２"},  # full-width digits
            {"cursor": "\u0000"},
        ):
            r = await api.client.get("/api/todos", params=params, headers=user.headers)
            if r.status_code != 200:
                assert_client_error(r, params)
        for raw_query in (b"q=%ff%fe", b"q=%00", b"q=%ed%a0%80", b"limit=%ff", b"cursor=%ff", b"done=%ff"):
            url = httpx.URL(api.url + "/api/todos", query=raw_query)
            r = await api.client.get(url, headers=user.headers)
            if r.status_code != 200:
                assert_client_error(r, raw_query)
        for raw_query in (b"since=%ff", b"since=%00", b"limit=%ff"):
            r = await api.client.get(httpx.URL(api.url + "/api/changes", query=raw_query), headers=user.headers)
            assert_client_error(r, raw_query)
        for bad_path in ("/api/todos/%ff", "/api/todos/%00", "/api/sessions/%ff", "/api/todos/" + "a" * 5000):
            for method in ("GET", "PATCH", "DELETE"):
                r = await api.client.request(method, api.url + bad_path, json={"done": True}, headers=user.headers)
                assert_client_error(r, bad_path)
        # The instance still serves the todo.
        r = await api.client.get(path, headers=user.headers)
        assert r.status_code == 200


async def test_unknown_routes_and_methods_answer_in_the_error_shape(api: Api) -> None:
    with trio.fail_after(10):
        user = await api.register()
        error_of(await api.client.get("/api/nothing-here", headers=user.headers), 404)
        error_of(await api.client.get("/nothing"), 404)
        error_of(await api.client.put("/api/todos", json={}, headers=user.headers), 405)
        error_of(await api.client.get("/api/auth/login"), 405)
        error_of(await api.client.delete("/api/me", headers=user.headers), 405)


async def test_body_over_the_limit_is_413(database_url: str) -> None:
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            instance = await start_instance(nursery, database_url, max_body_bytes=1024)
            async with httpx.AsyncClient(base_url=instance.url, timeout=10) as client:
                api = Api(instance, client)
                user = await api.register()
                todo = await api.create(user, "n" * 100)

                big = json.dumps({"title": "x", "notes": "n" * 2000})
                r = await client.post("/api/todos", content=big, headers={**user.headers, "Content-Type": "application/json"})
                error_of(r, 413, "too_large")
                r = await client.patch(f"/api/todos/{todo['id']}", content=big, headers=user.headers)
                error_of(r, 413, "too_large")
                r = await client.post("/api/auth/register", content=b" " * 5000 + b"{}")
                error_of(r, 413, "too_large")

                async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked
                    yield b'{"title": "x", "notes": "'
                    for _ in range(10):
                        yield b"n" * 500
                    yield b'"}'

                r = await client.post("/api/todos", content=chunks(), headers=user.headers)
                error_of(r, 413, "too_large")

                # Just under the limit is fine.
                fits = json.dumps({"title": "x", "notes": "n" * 900})
                assert len(fits) <= 1024
                r = await client.post("/api/todos", content=fits, headers=user.headers)
                assert r.status_code == 201, r.text
                assert len(await api.all_todos(user)) == 2
            instance.stop()


async def test_error_messages_say_what_is_wrong_in_the_users_terms(api: Api) -> None:
    """Malformed JSON is called invalid JSON, with where the parser stopped; a field's message is
    our validator's own text, without pydantic's "Value error, " prefix."""
    with trio.fail_after(10):
        user = await api.register()
        headers = {**user.headers, "Content-Type": "application/json"}
        r = await api.client.post("/api/todos", content=b'{"title": "buy milk",}', headers=headers)
        message = error_of(r, 400, "malformed")["message"]
        assert message == "the body is not valid JSON: trailing comma at line 1 column 22", message
        r = await api.client.post("/api/todos", content=b'["buy milk"]', headers=headers)
        assert error_of(r, 400, "malformed")["message"] == "the body must be a JSON object"
        r = await api.client.post("/api/todos", json={"title": "x", "due": "next tuesday"}, headers=user.headers)
        [detail] = error_of(r, 422, "invalid_input")["details"]
        assert detail == {"field": "due", "message": "must be ISO 8601 text: a date-time or a day (YYYY-MM-DD)"}
        r = await api.client.post("/graphql", content=b'{"query": "{ me { id } }"', headers=headers)
        assert r.status_code == 400
        assert r.json()["errors"][0]["message"].startswith("the body is not valid JSON: "), r.text
