"""Device sessions: listing, revoking one, revoking all others; a revoked token fails at once."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import trio

from tests.api.support import Api, error_of
from tests.harness import User


def parse_time(value: str) -> datetime:
    moment = datetime.fromisoformat(value)
    assert moment.tzinfo is not None, value
    return moment


async def assert_refused_everywhere(api: Api, user: User, todo_id: str) -> None:
    """Every authenticated endpoint answers 401 to ``user``'s token, and changes nothing."""
    for method, path, body in [
        ("GET", "/api/me", None),
        ("GET", "/api/sessions", None),
        ("DELETE", "/api/sessions", None),
        ("DELETE", f"/api/sessions/{user.session_id}", None),
        ("GET", "/api/todos", None),
        ("POST", "/api/todos", {"title": "from a revoked device"}),
        ("GET", f"/api/todos/{todo_id}", None),
        ("PATCH", f"/api/todos/{todo_id}", {"title": "changed by a revoked device"}),
        ("DELETE", f"/api/todos/{todo_id}", None),
        ("GET", "/api/changes", None),
        ("POST", "/api/auth/logout", None),
    ]:
        r = await api.client.request(method, path, json=body, headers=user.headers)
        error_of(r, 401, "unauthenticated")


async def test_sessions_lists_every_device_with_the_current_one_marked(api: Api) -> None:
    with trio.fail_after(10):
        before = datetime.now(UTC) - timedelta(seconds=5)
        laptop = await api.register("laptop")
        phone = await api.login(laptop, "phone")
        r = await api.client.get("/api/sessions", headers=phone.headers)
        assert r.status_code == 200, r.text
        sessions = r.json()["sessions"]
        assert [(s["id"], s["device"], s["current"]) for s in sessions] == [
            (laptop.session_id, "laptop", False),
            (phone.session_id, "phone", True),
        ]
        after = datetime.now(UTC) + timedelta(seconds=5)
        for s in sessions:
            assert {"id", "device", "created_at", "last_seen_at", "current", "online"} <= set(s)
            assert s["online"] is False  # no websocket connected
            created, seen = parse_time(s["created_at"]), parse_time(s["last_seen_at"])
            assert before <= created <= seen <= after
        r = await api.client.get("/api/sessions", headers=laptop.headers)
        assert [s["current"] for s in r.json()["sessions"]] == [True, False]


async def test_revoking_a_session_locks_that_device_out_at_once(api: Api) -> None:
    with trio.fail_after(10):
        laptop = await api.register("laptop")
        phone = await api.login(laptop, "phone")
        todo = await api.create(laptop, "keep me")
        assert (await api.client.get("/api/me", headers=phone.headers)).status_code == 200

        r = await api.client.delete(f"/api/sessions/{phone.session_id}", headers=laptop.headers)
        assert r.status_code == 204, r.text
        assert r.content == b""
        await assert_refused_everywhere(api, phone, todo["id"])

        r = await api.client.get("/api/sessions", headers=laptop.headers)
        assert [s["id"] for s in r.json()["sessions"]] == [laptop.session_id]
        r = await api.client.get(f"/api/todos/{todo['id']}", headers=laptop.headers)
        assert r.json()["todo"] == todo
        assert [t["id"] for t in await api.all_todos(laptop)] == [todo["id"]]
        # Revoking it again: it is gone.
        r = await api.client.delete(f"/api/sessions/{phone.session_id}", headers=laptop.headers)
        error_of(r, 404, "not_found")


async def test_revoking_the_current_session_is_a_logout(api: Api) -> None:
    with trio.fail_after(10):
        laptop = await api.register("laptop")
        phone = await api.login(laptop, "phone")
        r = await api.client.delete(f"/api/sessions/{laptop.session_id}", headers=laptop.headers)
        assert r.status_code == 204
        error_of(await api.client.get("/api/me", headers=laptop.headers), 401)
        assert (await api.client.get("/api/me", headers=phone.headers)).status_code == 200


async def test_revoking_an_unknown_or_foreign_session_is_404(api: Api) -> None:
    with trio.fail_after(10):
        alice = await api.register("alice laptop")
        bob = await api.register("bob laptop")
        for session_id in (str(uuid.uuid4()), "not-a-uuid", "0", bob.session_id):
            r = await api.client.delete(f"/api/sessions/{session_id}", headers=alice.headers)
            error_of(r, 404, "not_found")
        # Bob's session was not touched.
        assert (await api.client.get("/api/me", headers=bob.headers)).status_code == 200
        r = await api.client.get("/api/sessions", headers=bob.headers)
        assert [s["id"] for s in r.json()["sessions"]] == [bob.session_id]


async def test_revoking_all_other_sessions_keeps_the_current_one(api: Api) -> None:
    with trio.fail_after(15):
        laptop = await api.register("laptop")
        phone = await api.login(laptop, "phone")
        tablet = await api.login(laptop, "tablet")
        other = await api.register("someone else")
        todo = await api.create(laptop)

        r = await api.client.delete("/api/sessions", headers=phone.headers)
        assert r.status_code in (200, 204), r.text
        if r.status_code == 200:
            assert r.json()["revoked"] == 2
        assert (await api.client.get("/api/me", headers=phone.headers)).status_code == 200
        for revoked in (laptop, tablet):
            await assert_refused_everywhere(api, revoked, todo["id"])
        r = await api.client.get("/api/sessions", headers=phone.headers)
        assert [(s["id"], s["current"]) for s in r.json()["sessions"]] == [(phone.session_id, True)]
        # Another user's sessions are not "other sessions" of this one.
        assert (await api.client.get("/api/me", headers=other.headers)).status_code == 200
        # Nothing left to revoke.
        r = await api.client.delete("/api/sessions", headers=phone.headers)
        assert r.status_code in (200, 204)
        if r.status_code == 200:
            assert r.json()["revoked"] == 0
        assert (await api.client.get("/api/me", headers=phone.headers)).status_code == 200
