"""GraphQL twins of tests/api/test_auth.py: register, login, logout, me, and bearer tokens."""

from __future__ import annotations

import uuid
from typing import Any

import trio

from tests.api.graphql.support import (
    AUTH_FIELDS,
    PASSWORD,
    USER_FIELDS,
    Gql,
    fields_of,
    new_email,
)

REGISTER = f"mutation($input: CredentialsInput!) {{ register(input: $input) {{ {AUTH_FIELDS} }} }}"
LOGIN = f"mutation($input: CredentialsInput!) {{ login(input: $input) {{ {AUTH_FIELDS} }} }}"
ME = f"{{ me {{ {USER_FIELDS} }} }}"


async def test_register_returns_user_session_and_working_token(gql: Gql) -> None:
    with trio.fail_after(10):
        email = new_email()
        data = await gql.data(REGISTER, {"input": {"email": email, "password": PASSWORD, "device": "phone"}})
        payload = data["register"]
        assert payload["user"]["email"] == email
        assert set(payload["user"]) == {"id", "email", "createdAt"}
        assert payload["session"]["device"] == "phone" and payload["session"]["current"] is True
        assert isinstance(payload["token"], str) and payload["token"]
        body = await gql.post(ME, headers={"Authorization": f"Bearer {payload['token']}"})
        assert body == {"data": {"me": payload["user"]}}
        # The same token works on REST, and REST shows the same user.
        r = await gql.api.client.get("/api/me", headers={"Authorization": f"Bearer {payload['token']}"})
        assert r.json()["user"] == {"id": payload["user"]["id"], "email": email,
                                    "created_at": payload["user"]["createdAt"]}


async def test_register_normalises_email_and_defaults_device(gql: Gql) -> None:
    with trio.fail_after(10):
        local = uuid.uuid4().hex[:10]
        data = await gql.data(REGISTER, {"input": {"email": f"  {local}@Example.COM ", "password": PASSWORD}})
        assert data["register"]["user"]["email"] == f"{local}@example.com"
        assert data["register"]["session"]["device"] == "unnamed device"


# Those of REST's BAD_REGISTRATIONS a GraphQL client can send: the service refuses them with
# the same field named. (A missing or mistyped field is refused by GraphQL's types, below.)
BAD_REGISTRATIONS: list[tuple[dict[str, Any], str]] = [
    ({"email": "no-at-sign.example.com", "password": PASSWORD}, "email"),
    ({"email": "two@@example.com", "password": PASSWORD}, "email"),
    ({"email": "a b@example.com", "password": PASSWORD}, "email"),
    ({"email": "user@localhost", "password": PASSWORD}, "email"),
    ({"email": "@example.com", "password": PASSWORD}, "email"),
    ({"email": "", "password": PASSWORD}, "email"),
    ({"email": "x" * 300 + "@example.com", "password": PASSWORD}, "email"),
    ({"email": "ok@example.com", "password": "short"}, "password"),
    ({"email": "ok@example.com", "password": ""}, "password"),
    ({"email": "ok@example.com", "password": PASSWORD, "device": ""}, "device"),
    ({"email": "ok@example.com", "password": PASSWORD, "device": "d" * 101}, "device"),
]


async def test_register_rejects_bad_input_as_invalid_input(gql: Gql) -> None:
    with trio.fail_after(10):
        for given, field in BAD_REGISTRATIONS:
            error = await gql.error(REGISTER, {"input": given}, code="invalid_input")
            assert field in fields_of(error), (given, error)
            assert error["path"] == ["register"]
        for given in (
            {"email": 42, "password": PASSWORD},
            {"password": PASSWORD},
            {"email": "ok@example.com"},
            {"email": "ok@example.com", "password": None},
            {"email": "ok@example.com", "password": PASSWORD, "admin": True},
        ):
            body = await gql.post(REGISTER, {"input": given})
            assert "data" not in body, body  # refused before anything ran
            assert {e["extensions"]["code"] for e in body["errors"]} == {"invalid_input"}, body
        # Nothing was created: the address is still free.
        await gql.data(REGISTER, {"input": {"email": "ok@example.com", "password": PASSWORD}})


async def test_register_duplicate_email_is_a_conflict_whatever_the_case(gql: Gql) -> None:
    with trio.fail_after(10):
        local = uuid.uuid4().hex[:10]
        await gql.data(REGISTER, {"input": {"email": f"{local}@example.com", "password": PASSWORD}})
        for variant in (f"{local}@example.com", f"{local.upper()}@EXAMPLE.com", f" {local}@example.com\t"):
            error = await gql.error(
                REGISTER, {"input": {"email": variant, "password": "another password"}}, code="conflict"
            )
            assert "password" not in error["message"]
        # The first password is still the one that logs in.
        await gql.error(
            LOGIN, {"input": {"email": f"{local}@example.com", "password": "another password"}},
            code="unauthenticated",
        )


async def test_login_opens_a_new_session(gql: Gql) -> None:
    with trio.fail_after(10):
        user = await gql.register("laptop")
        data = await gql.data(LOGIN, {"input": {"email": f"  {user.email.upper()} ",
                                                "password": user.password, "device": "phone"}})
        payload = data["login"]
        assert payload["user"]["id"] == user.user_id and payload["user"]["email"] == user.email
        assert payload["session"]["id"] != user.session_id
        assert payload["session"]["device"] == "phone" and payload["session"]["current"] is True
        assert payload["token"] != user.token
        body = await gql.post(ME, headers={"Authorization": f"Bearer {payload['token']}"})
        assert body["data"]["me"]["id"] == user.user_id


async def test_login_failures_do_not_say_which_part_was_wrong(gql: Gql) -> None:
    with trio.fail_after(10):
        user = await gql.register()
        wrong_password = await gql.error(
            LOGIN, {"input": {"email": user.email, "password": "not the password"}}, code="unauthenticated"
        )
        unknown_email = await gql.error(
            LOGIN, {"input": {"email": new_email(), "password": user.password}}, code="unauthenticated"
        )
        assert wrong_password == unknown_email
        # Bad shapes are still invalid_input, not unauthenticated (REST: 422, not 401).
        error = await gql.error(LOGIN, {"input": {"email": user.email, "password": ""}},
                                code="invalid_input")
        assert fields_of(error) == {"password"}


async def test_logout_revokes_only_the_current_device(gql: Gql) -> None:
    with trio.fail_after(10):
        laptop = await gql.register("laptop")
        phone = await gql.login(laptop, "phone")
        assert await gql.data("mutation { logout }", user=laptop) == {"logout": True}
        await gql.error(ME, user=laptop, code="unauthenticated")
        await gql.error("mutation { logout }", user=laptop, code="unauthenticated")
        assert (await gql.data(ME, user=phone))["me"]["id"] == laptop.user_id
        sessions = await gql.data("{ sessions { id } }", user=phone)
        assert sessions == {"sessions": [{"id": phone.session_id}]}
        again = await gql.login(laptop, "laptop")
        assert (await gql.data(ME, user=again))["me"]["id"] == laptop.user_id


BAD_AUTHORIZATIONS = [
    None, "", "Bearer", "Basic dXNlcjpwYXNz", "Bearer not-a-token", "Bearer a.b.c",
    "Token {token}", "Bearer {token}x", "Bearer x{token}", "Bearer {token} extra",
]


async def test_missing_or_bad_token_is_unauthenticated(gql: Gql) -> None:
    with trio.fail_after(10):
        user = await gql.register()
        for authorization in BAD_AUTHORIZATIONS:
            headers = {} if authorization is None else {"Authorization": authorization.format(token=user.token)}
            for document in (
                "{ me { id } }", "{ sessions { id } }", "{ todos { rev } }", "{ changes { rev } }",
                '{ todo(id: "x") { id } }', 'mutation { createTodo(input: {title: "x"}) { id } }',
                "mutation { logout }", 'mutation { revokeSession(id: "x") }',
            ):
                body = await gql.post(document, headers=headers)
                assert [e["extensions"]["code"] for e in body["errors"]] == ["unauthenticated"], body
        # The real token still works, and nothing was created.
        assert (await gql.data("{ todos { nodes { id } } }", user=user))["todos"]["nodes"] == []


async def test_one_request_authenticates_once_for_all_its_fields(gql: Gql) -> None:
    with trio.fail_after(10):
        body = await gql.post("{ me { id } sessions { id } todos { rev } }",
                              headers={"Authorization": "Bearer nope"})
        assert body["data"] == {"me": None, "sessions": None, "todos": None}
        assert [e["extensions"]["code"] for e in body["errors"]] == ["unauthenticated"] * 3


async def test_bearer_scheme_is_case_insensitive(gql: Gql) -> None:
    with trio.fail_after(10):
        user = await gql.register()
        body = await gql.post(ME, headers={"Authorization": f"bearer {user.token}"})
        assert body["data"]["me"]["id"] == user.user_id
