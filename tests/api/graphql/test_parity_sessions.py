"""GraphQL twins of tests/api/test_sessions.py and the session half of test_isolation.py."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import trio

from tests.api.graphql.support import SESSION_FIELDS, Gql
from tests.harness import User

SESSIONS = f"{{ sessions {{ {SESSION_FIELDS} }} }}"
REVOKE = "mutation($id: ID!) { revokeSession(id: $id) }"


async def assert_refused_everywhere(gql: Gql, user: User, todo_id: str) -> None:
    for document, variables in [
        ("{ me { id } }", None),
        ("{ sessions { id } }", None),
        ("mutation { revokeOtherSessions }", None),
        (REVOKE, {"id": user.session_id}),
        ("{ todos { rev } }", None),
        ('mutation { createTodo(input: {title: "from a revoked device"}) { id } }', None),
        ("query($id: ID!) { todo(id: $id) { id } }", {"id": todo_id}),
        ('mutation($id: ID!) { updateTodo(id: $id, input: {title: "x"}) { id } }', {"id": todo_id}),
        ("mutation($id: ID!) { deleteTodo(id: $id) { rev } }", {"id": todo_id}),
        ("{ changes { rev } }", None),
        ("mutation { logout }", None),
    ]:
        await gql.error(document, variables, user, code="unauthenticated")


async def test_sessions_lists_every_device_with_the_current_one_marked(gql: Gql) -> None:
    with trio.fail_after(10):
        before = datetime.now(UTC) - timedelta(seconds=5)
        laptop = await gql.register("laptop")
        phone = await gql.login(laptop, "phone")
        sessions = (await gql.data(SESSIONS, user=phone))["sessions"]
        assert [(s["id"], s["device"], s["current"], s["online"]) for s in sessions] == [
            (laptop.session_id, "laptop", False, False),
            (phone.session_id, "phone", True, False),
        ]
        after = datetime.now(UTC) + timedelta(seconds=5)
        for s in sessions:
            created, seen = datetime.fromisoformat(s["createdAt"]), datetime.fromisoformat(s["lastSeenAt"])
            assert before <= created <= seen <= after
        # The same answer as REST, field for field.
        r = await gql.api.client.get("/api/sessions", headers=phone.headers)
        assert [(s["id"], s["device"], s["created_at"], s["current"], s["online"]) for s in r.json()["sessions"]] == [
            (s["id"], s["device"], s["createdAt"], s["current"], s["online"]) for s in sessions
        ]
        sessions = (await gql.data(SESSIONS, user=laptop))["sessions"]
        assert [s["current"] for s in sessions] == [True, False]


async def test_revoking_a_session_locks_that_device_out_at_once(gql: Gql) -> None:
    with trio.fail_after(10):
        laptop = await gql.register("laptop")
        phone = await gql.login(laptop, "phone")
        todo = await gql.create(laptop, "keep me")
        assert await gql.data(REVOKE, {"id": phone.session_id}, laptop) == {"revokeSession": True}
        await assert_refused_everywhere(gql, phone, todo["id"])
        assert await gql.data("{ sessions { id } }", user=laptop) == {"sessions": [{"id": laptop.session_id}]}
        assert (await gql.data("query($id: ID!) { todo(id: $id) { id } }", {"id": todo["id"]}, laptop))["todo"]
        await gql.error(REVOKE, {"id": phone.session_id}, laptop, code="not_found")


async def test_revoking_the_current_session_is_a_logout(gql: Gql) -> None:
    with trio.fail_after(10):
        laptop = await gql.register("laptop")
        phone = await gql.login(laptop, "phone")
        await gql.data(REVOKE, {"id": laptop.session_id}, laptop)
        await gql.error("{ me { id } }", user=laptop, code="unauthenticated")
        assert (await gql.data("{ me { id } }", user=phone))["me"]["id"] == laptop.user_id


async def test_revoking_an_unknown_or_foreign_session_is_not_found(gql: Gql) -> None:
    with trio.fail_after(10):
        alice = await gql.register("alice laptop")
        bob = await gql.register("bob laptop")
        for session_id in (str(uuid.uuid4()), "not-a-uuid", "0", bob.session_id):
            error = await gql.error(REVOKE, {"id": session_id}, alice, code="not_found")
            assert error["message"] == "session not found"
        assert (await gql.data("{ me { id } }", user=bob))["me"]["id"] == bob.user_id
        assert await gql.data("{ sessions { id } }", user=bob) == {"sessions": [{"id": bob.session_id}]}


async def test_revoking_all_other_sessions_keeps_the_current_one(gql: Gql) -> None:
    with trio.fail_after(15):
        laptop = await gql.register("laptop")
        phone = await gql.login(laptop, "phone")
        tablet = await gql.login(laptop, "tablet")
        other = await gql.register("someone else")
        todo = await gql.create(laptop)
        assert await gql.data("mutation { revokeOtherSessions }", user=phone) == {"revokeOtherSessions": 2}
        for revoked in (laptop, tablet):
            await assert_refused_everywhere(gql, revoked, todo["id"])
        sessions = (await gql.data("{ sessions { id current } }", user=phone))["sessions"]
        assert sessions == [{"id": phone.session_id, "current": True}]
        assert (await gql.data("{ me { id } }", user=other))["me"]["id"] == other.user_id
        assert await gql.data("mutation { revokeOtherSessions }", user=phone) == {"revokeOtherSessions": 0}


async def test_another_users_sessions_are_invisible_and_unrevocable(gql: Gql) -> None:
    with trio.fail_after(15):
        alice = await gql.register("alice laptop")
        alice_phone = await gql.login(alice, "alice phone")
        bob = await gql.register("bob laptop")
        body = await gql.post(SESSIONS, user=bob)
        assert [s["id"] for s in body["data"]["sessions"]] == [bob.session_id]
        assert "alice" not in str(body)
        await gql.data("mutation { revokeOtherSessions }", user=bob)
        await gql.data("mutation { logout }", user=bob)
        for device in (alice, alice_phone):
            assert (await gql.data("{ me { id } }", user=device))["me"]["id"] == alice.user_id
        assert len((await gql.data("{ sessions { id } }", user=alice))["sessions"]) == 2
