"""Register, login, logout, /api/me, and what a bearer token must be."""

from __future__ import annotations

import statistics
import time
import uuid

import trio

from tests.api.support import Api, error_of, fields_of


def new_email() -> str:
    return f"{uuid.uuid4().hex[:10]}@example.com"


PASSWORD = "correct horse battery"


async def test_register_returns_user_session_and_working_token(api: Api) -> None:
    with trio.fail_after(10):
        email = new_email()
        r = await api.client.post(
            "/api/auth/register", json={"email": email, "password": PASSWORD, "device": "phone"}
        )
        assert r.status_code == 201, r.text
        body = r.json()
        assert set(body) == {"user", "session", "token"}
        assert body["user"]["email"] == email
        assert set(body["user"]) == {"id", "email", "created_at"}
        assert "password" not in r.text and "hash" not in r.text
        session = body["session"]
        assert session["device"] == "phone" and session["current"] is True
        assert isinstance(body["token"], str) and body["token"]

        r = await api.client.get("/api/me", headers={"Authorization": f"Bearer {body['token']}"})
        assert r.status_code == 200
        assert r.json() == {"user": body["user"]}


async def test_register_normalises_email_and_defaults_device(api: Api) -> None:
    with trio.fail_after(10):
        local = uuid.uuid4().hex[:10]
        r = await api.client.post(
            "/api/auth/register", json={"email": f"  {local}@Example.COM ", "password": PASSWORD}
        )
        assert r.status_code == 201, r.text
        assert r.json()["user"]["email"] == f"{local}@example.com"
        assert r.json()["session"]["device"] == "unnamed device"


BAD_REGISTRATIONS = [
        ({"email": "no-at-sign.example.com", "password": PASSWORD}, "email"),
        ({"email": "two@@example.com", "password": PASSWORD}, "email"),
        ({"email": "a b@example.com", "password": PASSWORD}, "email"),
        ({"email": "user@localhost", "password": PASSWORD}, "email"),
        ({"email": "@example.com", "password": PASSWORD}, "email"),
        ({"email": "", "password": PASSWORD}, "email"),
        ({"email": "x" * 300 + "@example.com", "password": PASSWORD}, "email"),
        ({"email": 42, "password": PASSWORD}, "email"),
        ({"password": PASSWORD}, "email"),
        ({"email": "ok@example.com", "password": "short"}, "password"),
        ({"email": "ok@example.com", "password": ""}, "password"),
        ({"email": "ok@example.com"}, "password"),
        ({"email": "ok@example.com", "password": None}, "password"),
        ({"email": "ok@example.com", "password": PASSWORD, "device": ""}, "device"),
        ({"email": "ok@example.com", "password": PASSWORD, "device": "d" * 101}, "device"),
        ({"email": "ok@example.com", "password": PASSWORD, "admin": True}, "admin"),
]


async def test_register_rejects_bad_input_with_422(api: Api) -> None:
    with trio.fail_after(10):
        for body, field in BAD_REGISTRATIONS:
            r = await api.client.post("/api/auth/register", json=body)
            error = error_of(r, 422, "invalid_input")
            assert field in fields_of(error), (body, error)
        # Nothing was created: the same email can still register.
        r = await api.client.post(
            "/api/auth/register", json={"email": "ok@example.com", "password": PASSWORD}
        )
        assert r.status_code == 201, r.text


async def test_register_duplicate_email_is_409_whatever_the_case_or_spacing(api: Api) -> None:
    with trio.fail_after(10):
        local = uuid.uuid4().hex[:10]
        r = await api.client.post(
            "/api/auth/register", json={"email": f"{local}@example.com", "password": PASSWORD}
        )
        assert r.status_code == 201
        for variant in (f"{local}@example.com", f"{local.upper()}@EXAMPLE.com", f" {local}@example.com\t"):
            r = await api.client.post(
                "/api/auth/register", json={"email": variant, "password": "another password"}
            )
            error = error_of(r, 409, "conflict")
            assert "password" not in error["message"]
        # The first password is still the one that logs in.
        r = await api.client.post(
            "/api/auth/login", json={"email": f"{local}@example.com", "password": "another password"}
        )
        error_of(r, 401)


async def test_login_opens_a_new_session(api: Api) -> None:
    with trio.fail_after(10):
        user = await api.register("laptop")
        r = await api.client.post(
            "/api/auth/login",
            json={"email": f"  {user.email.upper()} ", "password": user.password, "device": "phone"},
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["user"]["id"] == user.user_id
        assert body["user"]["email"] == user.email
        assert body["session"]["id"] != user.session_id
        assert body["session"]["device"] == "phone" and body["session"]["current"] is True
        assert body["token"] != user.token
        r = await api.client.get("/api/me", headers={"Authorization": f"Bearer {body['token']}"})
        assert r.json()["user"]["id"] == user.user_id


async def test_login_failures_are_401_and_do_not_say_which_part_was_wrong(api: Api) -> None:
    with trio.fail_after(10):
        user = await api.register()
        wrong_password = await api.client.post(
            "/api/auth/login", json={"email": user.email, "password": "not the password"}
        )
        unknown_email = await api.client.post(
            "/api/auth/login", json={"email": new_email(), "password": user.password}
        )
        a = error_of(wrong_password, 401, "unauthenticated")
        b = error_of(unknown_email, 401, "unauthenticated")
        assert a == b
        # Bad shapes are still 422, not 401.
        r = await api.client.post("/api/auth/login", json={"email": user.email})
        error_of(r, 422)


async def test_login_time_does_not_reveal_whether_an_email_exists(api: Api) -> None:
    with trio.fail_after(30):
        user = await api.register()

        async def timed(email: str) -> float:
            start = time.perf_counter()
            r = await api.client.post("/api/auth/login", json={"email": email, "password": "wrong password"})
            assert r.status_code == 401
            return time.perf_counter() - start

        await timed(user.email)  # warm up connections and caches
        known: list[float] = []
        unknown: list[float] = []
        for _ in range(5):  # interleaved, so drift affects both alike
            known.append(await timed(user.email))
            unknown.append(await timed(new_email()))
        ratio = statistics.median(unknown) / statistics.median(known)
        assert 0.5 <= ratio <= 2.0, (known, unknown)


async def test_logout_revokes_only_the_current_device(api: Api) -> None:
    with trio.fail_after(10):
        laptop = await api.register("laptop")
        phone = await api.login(laptop, "phone")
        r = await api.client.post("/api/auth/logout", headers=laptop.headers)
        assert r.status_code == 204
        assert r.content == b""
        error_of(await api.client.get("/api/me", headers=laptop.headers), 401, "unauthenticated")
        error_of(await api.client.post("/api/auth/logout", headers=laptop.headers), 401)
        r = await api.client.get("/api/me", headers=phone.headers)
        assert r.status_code == 200
        r = await api.client.get("/api/sessions", headers=phone.headers)
        assert [s["id"] for s in r.json()["sessions"]] == [phone.session_id]
        # Logging in again works and gives a fresh token.
        again = await api.login(laptop, "laptop")
        assert (await api.client.get("/api/me", headers=again.headers)).status_code == 200


BAD_AUTHORIZATIONS = [
        None,
        "",
        "Bearer",
        "Basic dXNlcjpwYXNz",
        "Bearer not-a-token",
        "Bearer a.b.c",
        "Token {token}",
        "Bearer {token}x",
        "Bearer x{token}",
        "Bearer {token} extra",
]


async def test_missing_or_bad_token_is_401(api: Api) -> None:
    with trio.fail_after(10):
        user = await api.register()
        for authorization in BAD_AUTHORIZATIONS:
            headers = {}
            if authorization is not None:
                headers["Authorization"] = authorization.format(token=user.token)
            for method, path in [
                ("GET", "/api/me"),
                ("GET", "/api/sessions"),
                ("GET", "/api/todos"),
                ("POST", "/api/todos"),
                ("GET", "/api/changes"),
                ("POST", "/api/auth/logout"),
            ]:
                kwargs = {"json": {"title": "x"}} if method == "POST" else {}
                r = await api.client.request(method, path, headers=headers, **kwargs)
                error_of(r, 401, "unauthenticated")
        # The real token still works, and nothing was created.
        r = await api.client.get("/api/todos", headers=user.headers)
        assert r.json()["items"] == []


async def test_bearer_scheme_is_case_insensitive(api: Api) -> None:
    with trio.fail_after(10):
        user = await api.register()
        r = await api.client.get("/api/me", headers={"Authorization": f"bearer {user.token}"})
        assert r.status_code == 200


async def test_token_of_another_secret_is_refused(api: Api) -> None:
    from itsdangerous import URLSafeTimedSerializer

    with trio.fail_after(10):
        user = await api.register()
        forged = URLSafeTimedSerializer("some other key", salt="nursery.session").dumps(user.session_id)
        r = await api.client.get("/api/me", headers={"Authorization": f"Bearer {forged}"})
        error_of(r, 401)
