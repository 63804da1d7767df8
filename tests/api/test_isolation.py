"""One user can never read, change, delete or learn of another user's todos or sessions."""

from __future__ import annotations

import trio

from tests.api.support import Api, error_of
from tests.harness import User


async def test_another_users_todos_are_invisible_and_untouchable(api: Api) -> None:
    with trio.fail_after(15):
        alice = await api.register("alice laptop")
        bob = await api.register("bob laptop")
        secret = await api.create(alice, "alice's secret", notes="private", tags=["mine"])
        gone = await api.create(alice, "alice's deleted")
        r = await api.client.delete(f"/api/todos/{gone['id']}", headers=alice.headers)
        assert r.status_code == 204
        alice_head = await api.head(alice)
        bobs = await api.create(bob, "bob's own")

        for todo_id in (secret["id"], gone["id"]):
            # The same answer as for an id that never existed: nothing is revealed.
            for method, body, params in [
                ("GET", None, None),
                ("PATCH", {"title": "pwned"}, None),
                ("PATCH", {"done": True, "if_rev": secret["rev"]}, None),
                ("DELETE", None, None),
                ("DELETE", None, {"if_rev": secret["rev"]}),
            ]:
                r = await api.client.request(
                    method, f"/api/todos/{todo_id}", json=body, params=params, headers=bob.headers
                )
                assert error_of(r, 404, "not_found")["message"] == "todo not found"

        # Bob's views hold only Bob's things.
        r = await api.client.get("/api/todos", headers=bob.headers)
        assert [t["id"] for t in r.json()["items"]] == [bobs["id"]]
        r = await api.client.get("/api/todos", params={"q": "secret"}, headers=bob.headers)
        assert r.json()["items"] == []
        r = await api.client.get("/api/changes", params={"since": 0}, headers=bob.headers)
        body = r.json()
        assert [c["todo"]["id"] for c in body["changes"]] == [bobs["id"]]
        assert body["rev"] == bobs["rev"] == 1  # revisions are per user
        assert secret["id"] not in r.text and gone["id"] not in r.text

        # Alice's cursor does not open Bob's list onto Alice's todos.
        await api.create(alice, "another")
        r = await api.client.get("/api/todos", params={"limit": 1}, headers=alice.headers)
        cursor = r.json()["next_cursor"]
        assert cursor
        r = await api.client.get("/api/todos", params={"cursor": cursor}, headers=bob.headers)
        assert secret["id"] not in r.text

        # Alice's todo and revision are as she left them.
        r = await api.client.get(f"/api/todos/{secret['id']}", headers=alice.headers)
        assert r.json()["todo"] == secret
        assert await api.head(alice) == alice_head + 1


async def test_another_users_sessions_are_invisible_and_unrevocable(api: Api) -> None:
    with trio.fail_after(15):
        alice = await api.register("alice laptop")
        alice_phone = await api.login(alice, "alice phone")
        bob = await api.register("bob laptop")

        r = await api.client.get("/api/sessions", headers=bob.headers)
        assert [s["id"] for s in r.json()["sessions"]] == [bob.session_id]
        assert "alice" not in r.text
        for session_id in (alice.session_id, alice_phone.session_id):
            r = await api.client.delete(f"/api/sessions/{session_id}", headers=bob.headers)
            assert error_of(r, 404, "not_found")["message"] == "session not found"
        r = await api.client.delete("/api/sessions", headers=bob.headers)
        assert r.status_code in (200, 204)
        r = await api.client.post("/api/auth/logout", headers=bob.headers)
        assert r.status_code == 204

        for device in (alice, alice_phone):
            r = await api.client.get("/api/me", headers=device.headers)
            assert r.status_code == 200 and r.json()["user"]["id"] == alice.user_id
        r = await api.client.get("/api/sessions", headers=alice.headers)
        assert len(r.json()["sessions"]) == 2


async def test_me_is_the_callers_own_user(api: Api) -> None:
    with trio.fail_after(10):
        alice = await api.register()
        bob = await api.register()
        r = await api.client.get("/api/me", headers=alice.headers)
        assert r.json()["user"] == {"id": alice.user_id, "email": alice.email, "created_at": r.json()["user"]["created_at"]}
        r = await api.client.get("/api/me", headers=bob.headers)
        assert r.json()["user"]["id"] == bob.user_id


async def test_concurrent_writers_see_only_their_own(api: Api) -> None:
    with trio.fail_after(15):
        alice = await api.register()
        bob = await api.register()
        made: dict[str, set[str]] = {alice.user_id: set(), bob.user_id: set()}

        async def write(user: User, n: int) -> None:
            for i in range(n):
                todo = await api.create(user, f"{user.email} {i}")
                made[user.user_id].add(todo["id"])
                r = await api.client.patch(f"/api/todos/{todo['id']}", json={"done": True}, headers=user.headers)
                assert r.status_code == 200

        async with trio.open_nursery() as nursery:
            for user in (alice, bob):
                for _ in range(3):
                    nursery.start_soon(write, user, 4)

        for user in (alice, bob):
            assert {t["id"] for t in await api.all_todos(user)} == made[user.user_id]
            r = await api.client.get("/api/changes", params={"since": 0}, headers=user.headers)
            body = r.json()
            assert {c["todo"]["id"] for c in body["changes"]} == made[user.user_id]
            assert body["rev"] == 24  # 12 creates + 12 updates, numbered per user
