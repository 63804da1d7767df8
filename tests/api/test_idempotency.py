"""Idempotency-Key on writes: a retry returns the first result and changes nothing."""

from __future__ import annotations

import trio

from tests.api.support import Api, error_of, fields_of


async def test_create_retried_with_the_same_key_creates_one_todo(api: Api) -> None:
    with trio.fail_after(10):
        user = await api.register()
        headers = {**user.headers, "Idempotency-Key": "create-1"}
        first = await api.client.post("/api/todos", json={"title": "once"}, headers=headers)
        assert first.status_code == 201, first.text
        head = await api.head(user)
        again = await api.client.post("/api/todos", json={"title": "once"}, headers=headers)
        assert again.status_code == 201, again.text
        assert again.json() == first.json()
        assert await api.head(user) == head
        assert [t["id"] for t in await api.all_todos(user)] == [first.json()["todo"]["id"]]
        # A different key is a different request.
        other = await api.client.post(
            "/api/todos", json={"title": "once"}, headers={**user.headers, "Idempotency-Key": "create-2"}
        )
        assert other.status_code == 201 and other.json()["todo"]["id"] != first.json()["todo"]["id"]


async def test_concurrent_retries_with_one_key_create_one_todo(api: Api) -> None:
    with trio.fail_after(10):
        user = await api.register()
        headers = {**user.headers, "Idempotency-Key": "burst"}
        ids: list[str] = []

        async def post() -> None:
            r = await api.client.post("/api/todos", json={"title": "burst"}, headers=headers)
            assert r.status_code == 201, r.text
            ids.append(r.json()["todo"]["id"])

        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(post)
        assert len(set(ids)) == 1
        assert len(await api.all_todos(user)) == 1
        assert await api.head(user) == 1


async def test_patch_retried_with_the_same_key_changes_nothing(api: Api) -> None:
    with trio.fail_after(10):
        user = await api.register()
        todo = await api.create(user, "v1")
        path = f"/api/todos/{todo['id']}"
        keyed = {**user.headers, "Idempotency-Key": "patch-1"}
        first = await api.client.patch(path, json={"done": True}, headers=keyed)
        assert first.status_code == 200, first.text
        # Someone else edits it in between; the retry must not undo or redo anything.
        later = await api.client.patch(path, json={"done": False, "title": "v2"}, headers=user.headers)
        head = await api.head(user)
        again = await api.client.patch(path, json={"done": True}, headers=keyed)
        assert again.status_code == 200, again.text
        assert again.json() == first.json()
        assert await api.head(user) == head
        r = await api.client.get(path, headers=user.headers)
        assert r.json() == later.json()


async def test_delete_retried_with_the_same_key_is_204_and_changes_nothing(api: Api) -> None:
    with trio.fail_after(10):
        user = await api.register()
        todo = await api.create(user)
        keyed = {**user.headers, "Idempotency-Key": "delete-1"}
        r = await api.client.delete(f"/api/todos/{todo['id']}", headers=keyed)
        assert r.status_code == 204
        head = await api.head(user)
        r = await api.client.delete(f"/api/todos/{todo['id']}", headers=keyed)
        assert r.status_code == 204, r.text
        assert await api.head(user) == head
        # Without the key it is a new request, for a todo that is gone.
        error_of(await api.client.delete(f"/api/todos/{todo['id']}", headers=user.headers), 404)


async def test_a_key_reused_for_a_different_request_is_422(api: Api) -> None:
    with trio.fail_after(10):
        user = await api.register()
        keyed = {**user.headers, "Idempotency-Key": "k"}
        created = await api.client.post("/api/todos", json={"title": "one"}, headers=keyed)
        assert created.status_code == 201
        todo = created.json()["todo"]
        other = await api.create(user, "other")
        head = await api.head(user)
        for method, path, body in [
            ("PATCH", f"/api/todos/{todo['id']}", {"done": True}),
            ("DELETE", f"/api/todos/{todo['id']}", None),
            ("PATCH", f"/api/todos/{other['id']}", {"done": True}),
        ]:
            r = await api.client.request(method, path, json=body, headers=keyed)
            error_of(r, 422, "invalid_input")
        assert await api.head(user) == head
        r = await api.client.get(f"/api/todos/{todo['id']}", headers=user.headers)
        assert r.json()["todo"] == todo


async def test_a_key_reused_with_a_different_body_is_422(api: Api) -> None:
    with trio.fail_after(10):
        user = await api.register()
        keyed = {**user.headers, "Idempotency-Key": "k"}
        created = await api.client.post("/api/todos", json={"title": "one"}, headers=keyed)
        assert created.status_code == 201
        for body in ({"title": "a different todo"}, {"title": "one", "done": True}):
            r = await api.client.post("/api/todos", json=body, headers=keyed)
            error_of(r, 422, "invalid_input")
        assert len(await api.all_todos(user)) == 1

        other = created.json()["todo"]
        patch_key = {**user.headers, "Idempotency-Key": "p"}
        r = await api.client.patch(f"/api/todos/{other['id']}", json={"title": "first"}, headers=patch_key)
        assert r.status_code == 200
        r = await api.client.patch(f"/api/todos/{other['id']}", json={"title": "second"}, headers=patch_key)
        error_of(r, 422, "invalid_input")
        r = await api.client.get(f"/api/todos/{other['id']}", headers=user.headers)
        assert r.json()["todo"]["title"] == "first"


async def test_keys_belong_to_one_user(api: Api) -> None:
    with trio.fail_after(10):
        alice = await api.register()
        bob = await api.register()
        a = await api.client.post("/api/todos", json={"title": "a"}, headers={**alice.headers, "Idempotency-Key": "same"})
        b = await api.client.post("/api/todos", json={"title": "a"}, headers={**bob.headers, "Idempotency-Key": "same"})
        assert a.status_code == b.status_code == 201
        assert a.json()["todo"]["id"] != b.json()["todo"]["id"]
        assert [t["id"] for t in await api.all_todos(bob)] == [b.json()["todo"]["id"]]


async def test_a_failed_write_does_not_use_up_its_key(api: Api) -> None:
    with trio.fail_after(10):
        user = await api.register()
        todo = await api.create(user)
        keyed = {**user.headers, "Idempotency-Key": "retry-after-conflict"}
        path = f"/api/todos/{todo['id']}"
        r = await api.client.patch(path, json={"done": True, "if_rev": todo["rev"] + 1}, headers=keyed)
        error_of(r, 409)
        r = await api.client.patch(path, json={"done": True, "if_rev": todo["rev"]}, headers=keyed)
        assert r.status_code == 200, r.text
        assert r.json()["todo"]["done"] is True


async def test_malformed_keys_are_422(api: Api) -> None:
    with trio.fail_after(10):
        user = await api.register()
        for key in ("x" * 201, "tab\there"):
            r = await api.client.post(
                "/api/todos", json={"title": "x"}, headers={**user.headers, "Idempotency-Key": key}
            )
            assert "Idempotency-Key" in fields_of(error_of(r, 422)), key
        assert await api.all_todos(user) == []
        r = await api.client.post(
            "/api/todos", json={"title": "x"}, headers={**user.headers, "Idempotency-Key": "k" * 200}
        )
        assert r.status_code == 201
