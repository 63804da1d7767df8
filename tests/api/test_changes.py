"""The change feed (GET /api/changes) and the revision invariants under concurrent writes."""

from __future__ import annotations

import json
import random
from typing import Any

import trio
from trio_websocket import open_websocket_url

from tests.api.support import Api, error_of, fields_of
from tests.harness import User, hello


async def changes(api: Api, user: User, **params: Any) -> dict[str, Any]:
    r = await api.client.get("/api/changes", params=params, headers=user.headers)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def replay(api: Api, user: User, since: int = 0, limit: int = 1000) -> tuple[list[dict[str, Any]], int]:
    """Every change after ``since``, paging with ``limit``; and the revision reached."""
    out: list[dict[str, Any]] = []
    while True:
        body = await changes(api, user, since=since, limit=limit)
        assert "reset" not in body or not body["reset"]
        out += body["changes"]
        if body["changes"]:
            assert body["rev"] >= body["changes"][-1]["rev"]
        since = body["rev"]
        if not body["more"]:
            return out, since


async def test_changes_in_revision_order_with_deletes(api: Api) -> None:
    with trio.fail_after(10):
        user = await api.register()
        assert await changes(api, user) == {"changes": [], "rev": 0, "more": False}
        a = await api.create(user, "a")
        b = await api.create(user, "b")
        c = await api.create(user, "c")
        r = await api.client.patch(f"/api/todos/{a['id']}", json={"done": True}, headers=user.headers)
        a2 = r.json()["todo"]
        r = await api.client.delete(f"/api/todos/{b['id']}", headers=user.headers)
        assert r.status_code == 204

        body = await changes(api, user, since=0)
        assert body["more"] is False
        assert body["rev"] == 5
        # One entry per todo, its latest state, in revision order.
        assert body["changes"] == [
            {"rev": 3, "op": "upsert", "todo": c},
            {"rev": 4, "op": "upsert", "todo": a2},
            {"rev": 5, "op": "delete", "id": b["id"]},
        ]
        body = await changes(api, user, since=3)
        assert [ch["rev"] for ch in body["changes"]] == [4, 5]
        body = await changes(api, user, since=5)
        assert body == {"changes": [], "rev": 5, "more": False}
        # A reader ahead of the server (another database, a bug) gets nothing new.
        body = await changes(api, user, since=1000)
        assert body["changes"] == [] and body["more"] is False and body["rev"] == 5
        # No since: from the beginning.
        assert (await changes(api, user))["changes"] == (await changes(api, user, since=0))["changes"]


async def test_changes_pages_with_limit_and_more(api: Api) -> None:
    with trio.fail_after(10):
        user = await api.register()
        made = [await api.create(user, f"t{i}") for i in range(7)]
        body = await changes(api, user, since=0, limit=3)
        assert [c["rev"] for c in body["changes"]] == [1, 2, 3]
        assert body["more"] is True and body["rev"] == 3
        body = await changes(api, user, since=3, limit=3)
        assert [c["rev"] for c in body["changes"]] == [4, 5, 6]
        assert body["more"] is True
        body = await changes(api, user, since=6, limit=3)
        assert [c["rev"] for c in body["changes"]] == [7]
        assert body["more"] is False and body["rev"] == 7
        body = await changes(api, user, since=4, limit=3)
        assert [c["rev"] for c in body["changes"]] == [5, 6, 7]
        assert body["more"] is False
        all_changes, head = await replay(api, user, limit=2)
        assert [c["todo"] for c in all_changes] == made and head == 7


async def test_changes_rejects_bad_parameters(api: Api) -> None:
    with trio.fail_after(10):
        user = await api.register()
        for params, field in [
            ({"since": "-1"}, "since"),
            ({"since": "abc"}, "since"),
            ({"since": "1.5"}, "since"),
            ({"since": str(2**63)}, "since"),
            ({"limit": "0"}, "limit"),
            ({"limit": "1001"}, "limit"),
            ({"limit": "many"}, "limit"),
        ]:
            r = await api.client.get("/api/changes", params=params, headers=user.headers)
            assert fields_of(error_of(r, 422, "invalid_input")) == {field}, params
        body = await changes(api, user, since="0", limit="1000")
        assert body["changes"] == []


async def test_concurrent_writes_take_distinct_increasing_revisions(api: Api) -> None:
    """50 writes at once for one user: every revision is used once, commit order is revision
    order, and the change feed replays the exact final state ending at the head revision."""
    with trio.fail_after(30):
        user = await api.register()
        seed = [await api.create(user, f"seed {i}") for i in range(5)]
        rng = random.Random(1234)
        revs: list[int] = []
        touched: dict[str, list[int]] = {}

        async def one_write(i: int) -> None:
            if i % 3 == 0:
                r = await api.client.post("/api/todos", json={"title": f"new {i}"}, headers=user.headers)
                assert r.status_code == 201, r.text
            else:
                target = rng.choice(seed)["id"]
                r = await api.client.patch(
                    f"/api/todos/{target}", json={"title": f"edit {i}", "done": i % 2 == 0}, headers=user.headers
                )
                assert r.status_code == 200, r.text
            todo = r.json()["todo"]
            revs.append(todo["rev"])
            touched.setdefault(todo["id"], []).append(todo["rev"])

        async with trio.open_nursery() as nursery:
            for i in range(50):
                nursery.start_soon(one_write, i)

        assert sorted(revs) == list(range(6, 56))  # distinct, no gaps, after the 5 seeds
        head = await api.head(user)
        assert head == 55

        replayed, reached = await replay(api, user, since=0, limit=7)
        feed_revs = [c["rev"] for c in replayed]
        assert feed_revs == sorted(feed_revs) and len(set(feed_revs)) == len(feed_revs)
        assert reached == head and feed_revs[-1] == head
        # Applying the feed gives exactly the server's state.
        state: dict[str, dict[str, Any]] = {}
        for change in replayed:
            assert change["op"] == "upsert"
            assert change["todo"]["rev"] == change["rev"]
            state[change["todo"]["id"]] = change["todo"]
        listed = await api.all_todos(user)
        assert state == {t["id"]: t for t in listed}
        # Each todo's feed entry is its newest write.
        for todo_id, its_revs in touched.items():
            assert state[todo_id]["rev"] == max(its_revs)


async def test_changes_replay_tracks_deletes_under_concurrency(api: Api) -> None:
    with trio.fail_after(30):
        user = await api.register()
        todos = [await api.create(user, f"t{i}") for i in range(12)]
        before = await api.head(user)

        async def delete(todo_id: str) -> None:
            r = await api.client.delete(f"/api/todos/{todo_id}", headers=user.headers)
            assert r.status_code == 204, r.text

        async def update(todo_id: str) -> None:
            r = await api.client.patch(f"/api/todos/{todo_id}", json={"notes": "x"}, headers=user.headers)
            assert r.status_code == 200, r.text

        async with trio.open_nursery() as nursery:
            for i, todo in enumerate(todos):
                nursery.start_soon(delete if i % 2 else update, todo["id"])

        feed, head = await replay(api, user, since=before)
        assert head == before + 12
        assert [c["rev"] for c in feed] == list(range(before + 1, head + 1))
        deleted = {c["id"] for c in feed if c["op"] == "delete"}
        assert deleted == {t["id"] for i, t in enumerate(todos) if i % 2}
        assert {t["id"] for t in await api.all_todos(user)} == {t["id"] for i, t in enumerate(todos) if not i % 2}


async def test_a_revision_above_the_head_resets_over_rest_as_over_the_websocket(api: Api) -> None:
    """A client holding a revision this server never reached (another deployment, a restored
    backup) is told to refetch, by /api/changes as by /ws: never an empty page it would take
    for "nothing new"."""
    with trio.fail_after(20):
        user = await api.register()
        for title in ("a", "b", "c"):
            await api.create(user, title)
        assert await changes(api, user, since=10) == {"reset": True, "changes": [], "rev": 3, "more": False}
        assert (await changes(api, user, since=3))["changes"] == []  # at the head: nothing new
        async with open_websocket_url(api.instance.ws_url) as ws:
            await hello(ws, user.token, 10)
            assert json.loads(await ws.get_message()) == {"type": "reset", "rev": 3}
