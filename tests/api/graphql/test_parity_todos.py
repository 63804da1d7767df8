"""GraphQL twins of tests/api/test_todos.py, test_isolation.py (todos), test_changes.py and
test_idempotency.py: the same outcomes through the same services."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import datetime
from typing import Any

import trio

from tests.api.graphql.support import TODO_FIELDS, Gql, fields_of, rest_todo
from tests.harness import User

GET = f"query($id: ID!) {{ todo(id: $id) {{ {TODO_FIELDS} }} }}"
CREATE = f"mutation($input: NewTodoInput!) {{ createTodo(input: $input) {{ {TODO_FIELDS} }} }}"
UPDATE = f"""mutation($id: ID!, $input: TodoChangesInput!, $ifRev: Int) {{
  updateTodo(id: $id, input: $input, ifRev: $ifRev) {{ {TODO_FIELDS} }} }}"""
DELETE = "mutation($id: ID!, $ifRev: Int) { deleteTodo(id: $id, ifRev: $ifRev) { rev op id todo { id } } }"
LIST = f"""query($filter: TodoFilter, $first: Int, $after: String) {{
  todos(filter: $filter, first: $first, after: $after) {{
    nodes {{ {TODO_FIELDS} }} pageInfo {{ hasNextPage endCursor }} rev }} }}"""
CHANGES = f"""query($since: Int, $limit: Int) {{ changes(since: $since, limit: $limit) {{
  changes {{ rev op id todo {{ {TODO_FIELDS} }} }} rev more reset }} }}"""


def instant(value: str) -> datetime:
    moment = datetime.fromisoformat(value)
    assert moment.tzinfo is not None, value
    return moment


async def page(gql: Gql, user: User, **variables: Any) -> dict[str, Any]:
    todos: dict[str, Any] = (await gql.data(LIST, variables, user))["todos"]
    return todos


async def head(gql: Gql, user: User) -> int:
    rev: int = (await gql.data("{ todos(first: 1) { rev } }", user=user))["todos"]["rev"]
    return rev


async def all_ids(gql: Gql, user: User, **variables: Any) -> list[str]:
    ids: list[str] = []
    after = None
    while True:
        todos = await page(gql, user, first=200, after=after, **variables)
        ids += [t["id"] for t in todos["nodes"]]
        after = todos["pageInfo"]["endCursor"]
        if not todos["pageInfo"]["hasNextPage"]:
            assert after is None
            return ids


async def test_create_fills_defaults_and_reads_back_as_rest_does(gql: Gql) -> None:
    with trio.fail_after(10):
        user = await gql.register()
        todo = (await gql.data(CREATE, {"input": {"title": "  buy milk  "}}, user))["createTodo"]
        assert todo["title"] == "buy milk"
        assert (todo["notes"], todo["done"], todo["due"], todo["tags"]) == ("", False, None, [])
        assert todo["rev"] == 1 and todo["createdAt"] == todo["updatedAt"]
        uuid.UUID(todo["id"])
        assert (await gql.data(GET, {"id": todo["id"]}, user))["todo"] == todo
        r = await gql.api.client.get(f"/api/todos/{todo['id']}", headers=user.headers)
        assert r.json()["todo"] == rest_todo(todo)


async def test_create_with_every_field(gql: Gql) -> None:
    with trio.fail_after(10):
        user = await gql.register()
        todo = await gql.create(user, "dentist", notes="bring the card\nsecond line ✓", done=True,
                                due="2031-05-06T09:30:00+02:00", tags=["health", "  errands ", "ünïcode"])
        assert todo["notes"] == "bring the card\nsecond line ✓" and todo["done"] is True
        assert todo["tags"] == ["health", "errands", "ünïcode"]
        assert instant(todo["due"]) == instant("2031-05-06T07:30:00+00:00")
        naive = await gql.create(user, "naive", due="2031-01-01T12:00:00")
        assert instant(naive["due"]) == instant("2031-01-01T12:00:00+00:00")
        # A literal in the document works as a variable does.
        data = await gql.data('mutation { createTodo(input: {title: "lit", due: "2031-01-01T00:00:00Z", '
                              'tags: ["a"]}) { title tags due } }', user=user)
        assert data["createTodo"]["tags"] == ["a"]


# REST's INVALID_TODOS that fit GraphQL's types: refused by the service, field named.
INVALID_TODOS: list[tuple[dict[str, Any], str]] = [
    ({"title": ""}, "title"),
    ({"title": "   "}, "title"),
    ({"title": "x" * 501}, "title"),
    ({"title": "x", "done": None}, "done"),
    ({"title": "x", "notes": "n" * 10_001}, "notes"),
    ({"title": "x", "tags": [str(i) for i in range(21)]}, "tags"),
    ({"title": "x", "tags": [""]}, "tags.0"),
    ({"title": "x", "tags": ["t" * 51]}, "tags.0"),
    ({"title": "x", "due": "next tuesday"}, "due"),
    ({"title": "x", "due": "2031-02-30T00:00:00Z"}, "due"),
    ({"title": "x\x00"}, "title"),
]
# The rest of them: refused by GraphQL's types before anything runs, with the same code.
MISTYPED_TODOS: list[dict[str, Any]] = [
    {}, {"title": None}, {"title": 5}, {"title": ["a"]}, {"title": "x", "done": "yes"},
    {"title": "x", "done": 1}, {"title": "x", "notes": 7}, {"title": "x", "tags": [1]},
    {"title": "x", "due": {"at": 1}}, {"title": "x", "priority": 1},
    {"title": "x", "id": str(uuid.uuid4())}, {"title": "x", "rev": 99},
]


async def test_create_rejects_invalid_todos(gql: Gql) -> None:
    with trio.fail_after(10):
        user = await gql.register()
        for given, field in INVALID_TODOS:
            error = await gql.error(CREATE, {"input": given}, user, code="invalid_input")
            assert field in fields_of(error), (given, error)
        for given in MISTYPED_TODOS:
            body = await gql.post(CREATE, {"input": given}, user)
            assert "data" not in body and body["errors"], body
            assert {e["extensions"]["code"] for e in body["errors"]} == {"invalid_input"}, body
        await gql.create(user, "x" * 500, notes="n" * 10_000, tags=[f"{i:02}" * 25 for i in range(20)])
        assert await head(gql, user) == 1


async def test_unknown_or_malformed_id_is_not_found(gql: Gql) -> None:
    with trio.fail_after(10):
        user = await gql.register()
        await gql.create(user)
        for todo_id in (str(uuid.uuid4()), "nope", "1", "%00", "' OR 1=1 --"):
            for document, variables in (
                (GET, {"id": todo_id}),
                (UPDATE, {"id": todo_id, "input": {"done": True}}),
                (DELETE, {"id": todo_id}),
            ):
                error = await gql.error(document, variables, user, code="not_found")
                assert error["message"] == "todo not found"
        assert await head(gql, user) == 1


async def test_update_changes_only_the_given_fields_and_bumps_rev(gql: Gql) -> None:
    with trio.fail_after(10):
        user = await gql.register()
        todo = await gql.create(user, "write report", notes="draft", tags=["work"], due="2030-01-01T00:00:00Z")
        await trio.sleep(0.01)
        done = (await gql.data(UPDATE, {"id": todo["id"], "input": {"done": True}}, user))["updateTodo"]
        assert done["done"] is True
        for key in ("id", "title", "notes", "tags", "due", "createdAt"):
            assert done[key] == todo[key], key
        assert done["rev"] > todo["rev"] and instant(done["updatedAt"]) > instant(todo["updatedAt"])
        changed = (await gql.data(UPDATE, {"id": todo["id"], "input": {
            "title": "final report", "notes": "", "tags": [], "due": None}}, user))["updateTodo"]
        assert (changed["title"], changed["notes"], changed["tags"], changed["due"], changed["done"]) == (
            "final report", "", [], None, True)
        assert (await gql.data(GET, {"id": todo["id"]}, user))["todo"] == changed
        assert await head(gql, user) == changed["rev"]


async def test_update_if_rev(gql: Gql) -> None:
    with trio.fail_after(10):
        user = await gql.register()
        todo = await gql.create(user, "v1")
        v2 = (await gql.data(UPDATE, {"id": todo["id"], "input": {"title": "v2"}, "ifRev": todo["rev"]}, user))["updateTodo"]
        assert v2["title"] == "v2"
        error = await gql.error(UPDATE, {"id": todo["id"], "input": {"title": "stale"}, "ifRev": todo["rev"]},
                                user, code="conflict")
        assert error["extensions"]["details"]["rev"] == v2["rev"]
        error = await gql.error(UPDATE, {"id": todo["id"], "input": {"title": "future"}, "ifRev": v2["rev"] + 10},
                                user, code="conflict")
        assert error["extensions"]["details"]["rev"] == v2["rev"]
        assert (await gql.data(GET, {"id": todo["id"]}, user))["todo"] == v2
        assert await head(gql, user) == v2["rev"]  # failed writes take no revision
        error = await gql.error(UPDATE, {"id": todo["id"], "input": {"title": "x"}, "ifRev": -1},
                                user, code="invalid_input")
        assert fields_of(error) == {"if_rev"}
        for bad in ("3", 1.5, True):
            body = await gql.post(UPDATE, {"id": todo["id"], "input": {"title": "x"}, "ifRev": bad}, user)
            assert body["errors"][0]["extensions"]["code"] == "invalid_input", body


async def test_update_rejects_invalid_changes(gql: Gql) -> None:
    with trio.fail_after(10):
        user = await gql.register()
        todo = await gql.create(user, "stay")
        for given, field in [
            ({"title": None}, "title"), ({"title": ""}, "title"), ({"title": "x" * 501}, "title"),
            ({"notes": None}, "notes"), ({"done": None}, "done"), ({"tags": None}, "tags"),
            ({"tags": ["x"] * 21}, "tags"), ({"due": "soon"}, "due"),
        ]:
            error = await gql.error(UPDATE, {"id": todo["id"], "input": given}, user, code="invalid_input")
            assert field in fields_of(error), (given, error)
        for given in ({"done": "yes"}, {"id": str(uuid.uuid4())}, {"rev": 1}, {"createdAt": "2020-01-01T00:00:00Z"}):
            body = await gql.post(UPDATE, {"id": todo["id"], "input": given}, user)
            assert body["errors"][0]["extensions"]["code"] == "invalid_input", body
        assert (await gql.data(GET, {"id": todo["id"]}, user))["todo"] == todo


async def test_delete_and_delete_if_rev(gql: Gql) -> None:
    with trio.fail_after(10):
        user = await gql.register()
        keep = await gql.create(user, "keep")
        gone = await gql.create(user, "gone")
        change = (await gql.data(DELETE, {"id": gone["id"]}, user))["deleteTodo"]
        assert change == {"rev": gone["rev"] + 1, "op": "DELETE", "id": gone["id"], "todo": None}
        await gql.error(GET, {"id": gone["id"]}, user, code="not_found")
        await gql.error(DELETE, {"id": gone["id"]}, user, code="not_found")
        await gql.error(UPDATE, {"id": gone["id"], "input": {"done": True}}, user, code="not_found")
        assert await all_ids(gql, user) == [keep["id"]]

        newer = (await gql.data(UPDATE, {"id": keep["id"], "input": {"done": True}}, user))["updateTodo"]
        error = await gql.error(DELETE, {"id": keep["id"], "ifRev": keep["rev"]}, user, code="conflict")
        assert error["extensions"]["details"]["rev"] == newer["rev"]
        await gql.error(DELETE, {"id": keep["id"], "ifRev": -5}, user, code="invalid_input")
        await gql.data(DELETE, {"id": keep["id"], "ifRev": newer["rev"]}, user)
        assert await all_ids(gql, user) == []


async def test_list_in_creation_order_with_the_head_rev_as_rest(gql: Gql) -> None:
    with trio.fail_after(10):
        user = await gql.register()
        assert await page(gql, user) == {"nodes": [], "pageInfo": {"hasNextPage": False, "endCursor": None}, "rev": 0}
        made = [await gql.create(user, f"t{i}") for i in range(5)]
        todos = await page(gql, user)
        assert todos["nodes"] == made and todos["rev"] == made[-1]["rev"]
        r = await gql.api.client.get("/api/todos", headers=user.headers)
        assert r.json()["items"] == [rest_todo(t) for t in made] and r.json()["rev"] == todos["rev"]


async def test_list_filters_by_done_and_query(gql: Gql) -> None:
    with trio.fail_after(10):
        user = await gql.register()
        milk = await gql.create(user, "Buy MILK", done=True)
        bread = await gql.create(user, "bread", notes="from the milkman")
        percent = await gql.create(user, "100% done")
        underscore = await gql.create(user, "snake_case")

        async def ids(**given: Any) -> list[str]:
            return [t["id"] for t in (await page(gql, user, filter=given))["nodes"]]

        assert await ids(done=True) == [milk["id"]]
        assert await ids(done=False) == [bread["id"], percent["id"], underscore["id"]]
        assert await ids(q="milk") == [milk["id"], bread["id"]]
        assert await ids(q="mIlK", done=False) == [bread["id"]]
        assert await ids(q="%") == [percent["id"]]
        assert await ids(q="e_c") == [underscore["id"]]
        assert await ids(q="") == [milk["id"], bread["id"], percent["id"], underscore["id"]]
        for bad in ("x" * 201, "a\x00b"):
            error = await gql.error(LIST, {"filter": {"q": bad}}, user, code="invalid_input")
            assert fields_of(error) == {"q"}


async def test_list_first_bounds(gql: Gql) -> None:
    with trio.fail_after(10):
        user = await gql.register()
        for i in range(3):
            await gql.create(user, f"t{i}")
        for first in (0, 201, -1):
            error = await gql.error(LIST, {"first": first}, user, code="invalid_input")
            assert fields_of(error) == {"first"}
        for first in (1, 200):
            assert len((await page(gql, user, first=first))["nodes"]) == min(first, 3)


async def test_list_pages_with_cursor(gql: Gql) -> None:
    with trio.fail_after(10):
        user = await gql.register()
        made = [await gql.create(user, f"t{i}", done=i % 2 == 0) for i in range(7)]
        seen: list[str] = []
        after, pages = None, 0
        while True:
            todos = await page(gql, user, first=3, after=after)
            seen += [t["id"] for t in todos["nodes"]]
            pages += 1
            after = todos["pageInfo"]["endCursor"]
            if not todos["pageInfo"]["hasNextPage"]:
                break
        assert seen == [t["id"] for t in made] and pages == 3
        assert (await page(gql, user, first=7))["pageInfo"] == {"hasNextPage": False, "endCursor": None}
        assert await all_ids(gql, user, filter={"done": True}) == [t["id"] for t in made if t["done"]]
        # REST's cursor and GraphQL's are the same: a page can be continued on either.
        r = await gql.api.client.get("/api/todos", params={"limit": 3}, headers=user.headers)
        assert [t["id"] for t in (await page(gql, user, first=3, after=r.json()["next_cursor"]))["nodes"]] == [
            t["id"] for t in made[3:6]]


async def test_bad_cursor_is_invalid_input(gql: Gql) -> None:
    with trio.fail_after(10):
        user = await gql.register()
        await gql.create(user)

        def b64(value: object) -> str:
            return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

        for cursor in ("garbage", "!!!!", "é", b64([]), b64(["not a date", str(uuid.uuid4())]),
                       b64(["2024-01-01T00:00:00+00:00", "not a uuid"])):
            error = await gql.error(LIST, {"after": cursor}, user, code="invalid_input")
            assert fields_of(error) == {"cursor"}, cursor


async def test_another_users_todos_are_invisible_and_untouchable(gql: Gql) -> None:
    with trio.fail_after(15):
        alice = await gql.register("alice laptop")
        bob = await gql.register("bob laptop")
        secret = await gql.create(alice, "alice's secret", notes="private", tags=["mine"])
        gone = await gql.create(alice, "alice's deleted")
        await gql.data(DELETE, {"id": gone["id"]}, alice)
        alice_head = await head(gql, alice)
        bobs = await gql.create(bob, "bob's own")
        for todo_id in (secret["id"], gone["id"]):
            for document, variables in [
                (GET, {"id": todo_id}),
                (UPDATE, {"id": todo_id, "input": {"title": "pwned"}}),
                (UPDATE, {"id": todo_id, "input": {"done": True}, "ifRev": secret["rev"]}),
                (DELETE, {"id": todo_id}),
                (DELETE, {"id": todo_id, "ifRev": secret["rev"]}),
            ]:
                error = await gql.error(document, variables, bob, code="not_found")
                assert error["message"] == "todo not found"
        assert [t["id"] for t in (await page(gql, bob))["nodes"]] == [bobs["id"]]
        assert (await page(gql, bob, filter={"q": "secret"}))["nodes"] == []
        body = await gql.post(CHANGES, {"since": 0}, bob)
        assert [c["id"] for c in body["data"]["changes"]["changes"]] == [bobs["id"]]
        assert body["data"]["changes"]["rev"] == bobs["rev"] == 1
        assert secret["id"] not in str(body) and gone["id"] not in str(body)
        await gql.create(alice, "another")
        cursor = (await page(gql, alice, first=1))["pageInfo"]["endCursor"]
        assert cursor
        assert secret["id"] not in str(await gql.post(LIST, {"after": cursor}, bob))
        assert (await gql.data(GET, {"id": secret["id"]}, alice))["todo"] == secret
        assert await head(gql, alice) == alice_head + 1


async def test_changes_in_revision_order_with_deletes_as_rest(gql: Gql) -> None:
    with trio.fail_after(10):
        user = await gql.register()
        empty = (await gql.data(CHANGES, {}, user))["changes"]
        assert empty == {"changes": [], "rev": 0, "more": False, "reset": False}
        a = await gql.create(user, "a")
        b = await gql.create(user, "b")
        c = await gql.create(user, "c")
        a2 = (await gql.data(UPDATE, {"id": a["id"], "input": {"done": True}}, user))["updateTodo"]
        await gql.data(DELETE, {"id": b["id"]}, user)
        batch = (await gql.data(CHANGES, {"since": 0}, user))["changes"]
        assert batch["rev"] == 5 and batch["more"] is False and batch["reset"] is False
        assert batch["changes"] == [
            {"rev": 3, "op": "UPSERT", "id": c["id"], "todo": c},
            {"rev": 4, "op": "UPSERT", "id": a["id"], "todo": a2},
            {"rev": 5, "op": "DELETE", "id": b["id"], "todo": None},
        ]
        r = await gql.api.client.get("/api/changes", params={"since": 0}, headers=user.headers)
        assert [(x["rev"], x["op"]) for x in r.json()["changes"]] == [(3, "upsert"), (4, "upsert"), (5, "delete")]
        assert [x["rev"] for x in (await gql.data(CHANGES, {"since": 3}, user))["changes"]["changes"]] == [4, 5]
        # A revision this server never reached: refetch, as REST and /ws say.
        ahead = (await gql.data(CHANGES, {"since": 1000}, user))["changes"]
        assert ahead == {"changes": [], "rev": 5, "more": False, "reset": True}
        r = await gql.api.client.get("/api/changes", params={"since": 1000}, headers=user.headers)
        assert r.json() == {"changes": [], "rev": 5, "more": False, "reset": True}


async def test_changes_pages_with_limit_and_more(gql: Gql) -> None:
    with trio.fail_after(10):
        user = await gql.register()
        for i in range(7):
            await gql.create(user, f"t{i}")
        batch = (await gql.data(CHANGES, {"since": 0, "limit": 3}, user))["changes"]
        assert [c["rev"] for c in batch["changes"]] == [1, 2, 3] and batch["more"] is True and batch["rev"] == 3
        batch = (await gql.data(CHANGES, {"since": 6, "limit": 3}, user))["changes"]
        assert [c["rev"] for c in batch["changes"]] == [7] and batch["more"] is False
        for variables, field in [({"since": -1}, "since"), ({"limit": 0}, "limit"), ({"limit": 1001}, "limit")]:
            error = await gql.error(CHANGES, variables, user, code="invalid_input")
            assert fields_of(error) == {field}


async def test_create_retried_with_the_same_idempotency_key_creates_one_todo(gql: Gql) -> None:
    with trio.fail_after(10):
        user = await gql.register()
        keyed = f"mutation {{ createTodo(input: {{title: \"once\"}}, idempotencyKey: \"k-1\") {{ {TODO_FIELDS} }} }}"
        first = await gql.data(keyed, user=user)
        again = await gql.data(keyed, user=user)
        assert again == first and await head(gql, user) == 1
        # The key space is REST's too: the same key there replays the same write.
        r = await gql.api.client.post("/api/todos", json={"title": "once"},
                                      headers={**user.headers, "Idempotency-Key": "k-1"})
        assert r.json()["todo"] == rest_todo(first["createTodo"])
        error = await gql.error('mutation { createTodo(input: {title: "x"}, idempotencyKey: "") { id } }',
                                user=user, code="invalid_input")
        assert fields_of(error) == {"idempotency_key"}
