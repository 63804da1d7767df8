"""Todos CRUD and the list: defaults, validation, if_rev, filters, limits and cursors."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import datetime

import trio
import trio.lowlevel

from tests.api.support import TODO_KEYS, Api, error_of, fields_of


def instant(value: str) -> datetime:
    moment = datetime.fromisoformat(value)
    assert moment.tzinfo is not None, value
    return moment


async def test_create_fills_defaults(api: Api) -> None:
    with trio.fail_after(10):
        user = await api.register()
        head = await api.head(user)
        r = await api.client.post("/api/todos", json={"title": "  buy milk  "}, headers=user.headers)
        assert r.status_code == 201, r.text
        todo = r.json()["todo"]
        assert set(todo) == TODO_KEYS
        assert todo["title"] == "buy milk"
        assert (todo["notes"], todo["done"], todo["due"], todo["tags"]) == ("", False, None, [])
        assert todo["rev"] == head + 1
        assert todo["created_at"] == todo["updated_at"]
        uuid.UUID(todo["id"])
        r = await api.client.get(f"/api/todos/{todo['id']}", headers=user.headers)
        assert r.status_code == 200
        assert r.json() == {"todo": todo}


async def test_create_with_every_field(api: Api) -> None:
    with trio.fail_after(10):
        user = await api.register()
        r = await api.client.post(
            "/api/todos",
            json={
                "title": "dentist",
                "notes": "bring the card\nsecond line ✓",
                "done": True,
                "due": "2031-05-06T09:30:00+02:00",
                "tags": ["health", "  errands ", "ünïcode"],
            },
            headers=user.headers,
        )
        assert r.status_code == 201, r.text
        todo = r.json()["todo"]
        assert todo["notes"] == "bring the card\nsecond line ✓"
        assert todo["done"] is True
        assert todo["tags"] == ["health", "errands", "ünïcode"]
        # The same instant, whatever zone it is shown in.
        assert instant(todo["due"]) == instant("2031-05-06T07:30:00+00:00")
        r = await api.client.get(f"/api/todos/{todo['id']}", headers=user.headers)
        assert r.json()["todo"] == todo

        # A due date without a zone is taken as UTC.
        naive = await api.create(user, "naive", due="2031-01-01T12:00:00")
        assert instant(naive["due"]) == instant("2031-01-01T12:00:00+00:00")


INVALID_TODOS = [
    ({}, "title"),
    ({"title": ""}, "title"),
    ({"title": "   "}, "title"),
    ({"title": None}, "title"),
    ({"title": "x" * 501}, "title"),
    ({"title": 5}, "title"),
    ({"title": ["a"]}, "title"),
    ({"title": "x", "done": "yes"}, "done"),
    ({"title": "x", "done": 1}, "done"),
    ({"title": "x", "done": None}, "done"),
    ({"title": "x", "notes": 7}, "notes"),
    ({"title": "x", "notes": "n" * 10_001}, "notes"),
    ({"title": "x", "tags": "a,b"}, "tags"),
    ({"title": "x", "tags": [str(i) for i in range(21)]}, "tags"),
    ({"title": "x", "tags": [""]}, "tags.0"),
    ({"title": "x", "tags": ["t" * 51]}, "tags.0"),
    ({"title": "x", "tags": [1]}, "tags.0"),
    ({"title": "x", "due": "next tuesday"}, "due"),
    ({"title": "x", "due": "2031-02-30T00:00:00Z"}, "due"),
    ({"title": "x", "due": {"at": 1}}, "due"),
    ({"title": "x", "priority": 1}, "priority"),
    ({"title": "x", "id": str(uuid.uuid4())}, "id"),
    ({"title": "x", "rev": 99}, "rev"),
]


async def test_create_rejects_invalid_todos_with_422(api: Api) -> None:
    with trio.fail_after(10):
        user = await api.register()
        for body, field in INVALID_TODOS:
            r = await api.client.post("/api/todos", json=body, headers=user.headers)
            error = error_of(r, 422, "invalid_input")
            assert field in fields_of(error), (body, error)
        # The limits themselves are accepted.
        await api.create(user, "x" * 500, notes="n" * 10_000, tags=[f"{i:02}" * 25 for i in range(20)])
        items = await api.all_todos(user)
        assert len(items) == 1
        assert await api.head(user) == 1


async def test_get_unknown_or_malformed_id_is_404(api: Api) -> None:
    with trio.fail_after(10):
        user = await api.register()
        await api.create(user)
        for todo_id in (str(uuid.uuid4()), "nope", "1", "%00", "' OR 1=1 --", str(uuid.uuid4()).upper() + "0"):
            for method, body in (("GET", None), ("PATCH", {"done": True}), ("DELETE", None)):
                r = await api.client.request(method, f"/api/todos/{todo_id}", json=body, headers=user.headers)
                error_of(r, 404, "not_found")
        assert await api.head(user) == 1


async def test_patch_changes_only_the_given_fields_and_bumps_rev(api: Api) -> None:
    with trio.fail_after(10):
        user = await api.register()
        todo = await api.create(user, "write report", notes="draft", tags=["work"], due="2030-01-01T00:00:00Z")
        await trio.sleep(0.01)
        r = await api.client.patch(f"/api/todos/{todo['id']}", json={"done": True}, headers=user.headers)
        assert r.status_code == 200, r.text
        done = r.json()["todo"]
        assert done["done"] is True
        for key in ("id", "title", "notes", "tags", "due", "created_at"):
            assert done[key] == todo[key], key
        assert done["rev"] > todo["rev"]
        assert instant(done["updated_at"]) > instant(todo["updated_at"])

        r = await api.client.patch(
            f"/api/todos/{todo['id']}",
            json={"title": "final report", "notes": "", "tags": [], "due": None},
            headers=user.headers,
        )
        assert r.status_code == 200, r.text
        changed = r.json()["todo"]
        assert (changed["title"], changed["notes"], changed["tags"], changed["due"], changed["done"]) == (
            "final report", "", [], None, True,
        )
        assert changed["rev"] > done["rev"]
        r = await api.client.get(f"/api/todos/{todo['id']}", headers=user.headers)
        assert r.json()["todo"] == changed
        assert await api.head(user) == changed["rev"]


async def test_patch_if_rev(api: Api) -> None:
    with trio.fail_after(10):
        user = await api.register()
        todo = await api.create(user, "v1")
        r = await api.client.patch(
            f"/api/todos/{todo['id']}", json={"title": "v2", "if_rev": todo["rev"]}, headers=user.headers
        )
        assert r.status_code == 200, r.text
        v2 = r.json()["todo"]
        assert v2["title"] == "v2"

        # A writer that still holds v1 loses, and learns the current revision.
        r = await api.client.patch(
            f"/api/todos/{todo['id']}", json={"title": "stale", "if_rev": todo["rev"]}, headers=user.headers
        )
        error = error_of(r, 409, "conflict")
        assert error["details"]["rev"] == v2["rev"]
        assert error["message"] == (f"the todo changed since revision {todo['rev']}: "
                                    f"it is at revision {v2['rev']} now")
        r = await api.client.patch(
            f"/api/todos/{todo['id']}", json={"title": "future", "if_rev": v2["rev"] + 10}, headers=user.headers
        )
        assert error_of(r, 409)["details"]["rev"] == v2["rev"]
        r = await api.client.get(f"/api/todos/{todo['id']}", headers=user.headers)
        assert r.json()["todo"] == v2
        assert await api.head(user) == v2["rev"]  # failed writes take no revision

        for bad in (-1, "3", 1.5, True):
            r = await api.client.patch(
                f"/api/todos/{todo['id']}", json={"title": "x", "if_rev": bad}, headers=user.headers
            )
            assert "if_rev" in fields_of(error_of(r, 422)), bad


async def test_patch_rejects_invalid_changes_with_422(api: Api) -> None:
    with trio.fail_after(10):
        user = await api.register()
        todo = await api.create(user, "stay")
        for body, field in [
            ({"title": None}, "title"),
            ({"title": ""}, "title"),
            ({"title": "x" * 501}, "title"),
            ({"notes": None}, "notes"),
            ({"done": None}, "done"),
            ({"done": "yes"}, "done"),
            ({"tags": None}, "tags"),
            ({"tags": ["x"] * 21}, "tags"),
            ({"due": "soon"}, "due"),
            ({"id": str(uuid.uuid4())}, "id"),
            ({"rev": 1}, "rev"),
            ({"user_id": str(uuid.uuid4())}, "user_id"),
            ({"created_at": "2020-01-01T00:00:00Z"}, "created_at"),
        ]:
            r = await api.client.patch(f"/api/todos/{todo['id']}", json=body, headers=user.headers)
            assert field in fields_of(error_of(r, 422, "invalid_input")), (body, r.text)
        r = await api.client.get(f"/api/todos/{todo['id']}", headers=user.headers)
        assert r.json()["todo"] == todo


async def test_delete(api: Api) -> None:
    with trio.fail_after(10):
        user = await api.register()
        keep = await api.create(user, "keep")
        gone = await api.create(user, "gone")
        r = await api.client.delete(f"/api/todos/{gone['id']}", headers=user.headers)
        assert r.status_code == 204, r.text
        assert r.content == b""
        error_of(await api.client.get(f"/api/todos/{gone['id']}", headers=user.headers), 404, "not_found")
        error_of(await api.client.delete(f"/api/todos/{gone['id']}", headers=user.headers), 404)
        error_of(
            await api.client.patch(f"/api/todos/{gone['id']}", json={"done": True}, headers=user.headers), 404
        )
        assert [t["id"] for t in await api.all_todos(user)] == [keep["id"]]
        assert await api.head(user) == gone["rev"] + 1


async def test_delete_if_rev(api: Api) -> None:
    with trio.fail_after(10):
        user = await api.register()
        todo = await api.create(user)
        newer = (await api.client.patch(f"/api/todos/{todo['id']}", json={"done": True}, headers=user.headers)).json()["todo"]
        r = await api.client.delete(f"/api/todos/{todo['id']}", params={"if_rev": todo["rev"]}, headers=user.headers)
        assert error_of(r, 409, "conflict")["details"]["rev"] == newer["rev"]
        r = await api.client.delete(f"/api/todos/{todo['id']}", params={"if_rev": "abc"}, headers=user.headers)
        error_of(r, 422)
        assert (await api.client.get(f"/api/todos/{todo['id']}", headers=user.headers)).status_code == 200
        r = await api.client.delete(f"/api/todos/{todo['id']}", params={"if_rev": newer["rev"]}, headers=user.headers)
        assert r.status_code == 204


async def test_list_returns_items_in_creation_order_with_the_head_rev(api: Api) -> None:
    with trio.fail_after(10):
        user = await api.register()
        r = await api.client.get("/api/todos", headers=user.headers)
        assert r.status_code == 200
        assert r.json() == {"items": [], "next_cursor": None, "rev": 0}
        made = [await api.create(user, f"t{i}") for i in range(5)]
        r = await api.client.get("/api/todos", headers=user.headers)
        body = r.json()
        assert body["items"] == made
        assert body["next_cursor"] is None
        assert body["rev"] == made[-1]["rev"]


async def test_list_filters_by_done_and_query(api: Api) -> None:
    with trio.fail_after(10):
        user = await api.register()
        milk = await api.create(user, "Buy MILK", done=True)
        bread = await api.create(user, "bread", notes="from the milkman")
        percent = await api.create(user, "100% done")
        underscore = await api.create(user, "snake_case")
        plain = await api.create(user, "snakeXcase 100 percent")
        backslash = await api.create(user, r"path C:\temp")

        async def ids(**params: str) -> list[str]:
            r = await api.client.get("/api/todos", params=params, headers=user.headers)
            assert r.status_code == 200, r.text
            return [t["id"] for t in r.json()["items"]]

        assert await ids(done="true") == [milk["id"]]
        assert await ids(done="false") == [bread["id"], percent["id"], underscore["id"], plain["id"], backslash["id"]]
        assert await ids(done="TRUE") == [milk["id"]]
        assert await ids(q="milk") == [milk["id"], bread["id"]]  # title or notes, any case
        assert await ids(q="mIlK", done="false") == [bread["id"]]
        assert await ids(q="%") == [percent["id"]]
        assert await ids(q="0%") == [percent["id"]]
        assert await ids(q="_") == [underscore["id"]]
        assert await ids(q="e_c") == [underscore["id"]]
        assert await ids(q="\\") == [backslash["id"]]
        assert await ids(q="\\t") == [backslash["id"]]
        assert await ids(q="nothing like this") == []
        assert len(await ids(q="")) == 6  # empty q: no filter
        for bad in ("yes", "1", "maybe"):
            r = await api.client.get("/api/todos", params={"done": bad}, headers=user.headers)
            assert "done" in fields_of(error_of(r, 422))
        r = await api.client.get("/api/todos", params={"q": "x" * 201}, headers=user.headers)
        error_of(r, 422)


async def test_list_limit_bounds(api: Api) -> None:
    with trio.fail_after(10):
        user = await api.register()
        for i in range(3):
            await api.create(user, f"t{i}")
        for limit in ("0", "201", "-1", "abc", "1.5", "1e2", "99999999999999999999999"):
            r = await api.client.get("/api/todos", params={"limit": limit}, headers=user.headers)
            assert "limit" in fields_of(error_of(r, 422, "invalid_input")), limit
        for limit in ("1", "200"):
            r = await api.client.get("/api/todos", params={"limit": limit}, headers=user.headers)
            assert r.status_code == 200
            assert len(r.json()["items"]) == min(int(limit), 3)


async def test_list_pages_with_cursor(api: Api) -> None:
    with trio.fail_after(10):
        user = await api.register()
        made = [await api.create(user, f"t{i}", done=i % 2 == 0) for i in range(7)]
        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            params = {"limit": "3", **({"cursor": cursor} if cursor else {})}
            r = await api.client.get("/api/todos", params=params, headers=user.headers)
            body = r.json()
            assert len(body["items"]) <= 3
            seen += [t["id"] for t in body["items"]]
            pages += 1
            cursor = body["next_cursor"]
            if cursor is None:
                break
        assert seen == [t["id"] for t in made]
        assert pages == 3
        # Exactly one page: no cursor to a next, empty page.
        r = await api.client.get("/api/todos", params={"limit": "7"}, headers=user.headers)
        assert r.json()["next_cursor"] is None
        # The cursor keeps the filter's order.
        done = await api.all_todos(user, done="true")
        assert [t["id"] for t in done] == [t["id"] for t in made if t["done"]]


async def test_bad_cursor_is_422(api: Api) -> None:
    with trio.fail_after(10):
        user = await api.register()
        await api.create(user)

        def b64(value: object) -> str:
            return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

        for cursor in (
            "garbage",
            "!!!!",
            "é",
            "a",
            b64("not a list"),
            b64([]),
            b64([1, 2, 3]),
            b64({"a": 1, "b": 2}),
            b64(["not a date", str(uuid.uuid4())]),
            b64(["2024-01-01T00:00:00+00:00", "not a uuid"]),
            b64(["2024-01-01T00:00:00+00:00", 5]),
            b64(["2024-01-01T00:00:00+00:00", None]),
            b64([20240101, str(uuid.uuid4())]),
            b64([None, str(uuid.uuid4())]),
            base64.urlsafe_b64encode(b"\xff\xfe\x00").decode(),
        ):
            r = await api.client.get("/api/todos", params={"cursor": cursor}, headers=user.headers)
            assert fields_of(error_of(r, 422, "invalid_input")) == {"cursor"}, cursor
        # Well-formed cursors we never issued: a page (or 422), never a 500.
        for cursor in (
            b64(["2024-01-01T00:00:00", str(uuid.uuid4())]),
            b64(["0001-01-01T00:00:00+14:00", str(uuid.uuid4())]),
            b64(["9999-12-31T23:59:59-14:00", str(uuid.uuid4())]),
        ):
            r = await api.client.get("/api/todos", params={"cursor": cursor}, headers=user.headers)
            if r.status_code != 200:
                error_of(r, 422)


async def test_pagination_while_other_todos_change(api: Api) -> None:
    """Paging through todos that exist throughout never skips or repeats one, while another
    device creates, updates and deletes other todos (and updates these) in between pages."""
    with trio.fail_after(30):
        user = await api.register()
        stable: list[dict] = []
        extras: list[str] = []  # deleted while the reader pages: before and after its cursor
        for i in range(24):
            stable.append(await api.create(user, f"stable {i}"))
            if i % 2:
                extras.append((await api.create(user, f"doomed {i}"))["id"])
        stable_ids = {t["id"] for t in stable}
        seen: list[str] = []
        reading_done = trio.Event()
        writes = 0
        pages = 0

        async def churn() -> None:
            nonlocal writes
            i = 0
            while not reading_done.is_set():
                i += 1
                extras.append((await api.create(user, f"extra {i}"))["id"])
                victim = stable[i % len(stable)]["id"]
                r = await api.client.patch(f"/api/todos/{victim}", json={"done": i % 2 == 0}, headers=user.headers)
                assert r.status_code == 200, r.text
                if i % 2 == 0:
                    r = await api.client.delete(f"/api/todos/{extras.pop(0)}", headers=user.headers)
                    assert r.status_code == 204, r.text
                writes += 1
                await trio.lowlevel.checkpoint()

        async def read() -> None:
            nonlocal pages
            cursor = None
            while True:
                params = {"limit": "4", **({"cursor": cursor} if cursor else {})}
                r = await api.client.get("/api/todos", params=params, headers=user.headers)
                assert r.status_code == 200, r.text
                pages += 1
                seen.extend(t["id"] for t in r.json()["items"])
                cursor = r.json()["next_cursor"]
                if cursor is None:
                    break
                mark = writes  # let a round of writes land between every two pages
                while writes == mark:
                    await trio.sleep(0.002)
            reading_done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(churn)
            nursery.start_soon(read)

        assert pages >= 9 and writes >= pages - 1  # writes landed between every two pages
        seen_stable = [i for i in seen if i in stable_ids]
        assert seen_stable == [t["id"] for t in stable]  # each once, in order
        assert len(seen) == len(set(seen))  # no extra one twice either
