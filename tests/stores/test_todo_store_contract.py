"""The ONE contract of ``TodoStore`` (nursery/stores/base.py), run against every backend:
PostgreSQL, the MongoDB test double, and a real MongoDB when ``NURSERY_TEST_MONGO_URL`` is set
(see conftest.py). A backend passes when it answers exactly like the others."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import trio

from nursery.errors import Conflict, InvalidInput, NotFound
from nursery.models import Todo, TodoDraft, TodoPatch
from nursery.stores.base import TodoStore
from nursery.stores.cursors import encode_cursor
from tests.stores.backends import Backend

MISSING = "00000000-0000-4000-8000-000000000000"


async def create_in_order(store: TodoStore, user: str, draft: TodoDraft) -> Todo:
    """Lists are oldest first and ties go by id; MongoDB keeps milliseconds, so todos created
    within one would list by id. Tests about order create them a little apart."""
    todo = (await store.create_todo(user, draft)).change.todo
    assert todo is not None
    await trio.sleep(0.002)
    return todo


async def test_created_todo_reads_back_exactly(backend: Backend) -> None:
    with trio.fail_after(20):
        async with backend.open() as s:
            user = await s.new_user()
            due = datetime(2026, 5, 17, 8, 30, 15, 123000, tzinfo=UTC)
            draft = TodoDraft("buy milk", "2 litres", False, due, ("shop", "home"))
            result = await s.todos.create_todo(user, draft)
            change = result.change
            assert not result.replayed and change.op == "upsert" and change.rev == 1
            todo = change.todo
            assert todo is not None
            assert (todo.title, todo.notes, todo.done, todo.due, todo.tags) == (
                "buy milk", "2 litres", False, due, ("shop", "home"))
            assert todo.created_at == todo.updated_at
            assert abs(todo.created_at - datetime.now(UTC)) < timedelta(minutes=1)
            assert await s.todos.get_todo(user, todo.id) == todo
            page = await s.todos.list_todos(user)
            assert page.items == [todo] and page.next_cursor is None and page.rev == 1


async def test_revisions_are_per_user_contiguous_and_ordered(backend: Backend) -> None:
    with trio.fail_after(30):
        async with backend.open() as s:
            ada, bob = await s.new_user(), await s.new_user()
            revs: dict[str, list[int]] = {ada: [], bob: []}

            async def write(user: str, i: int) -> None:
                result = await s.todos.create_todo(user, TodoDraft(f"t{i}"))
                revs[user].append(result.change.rev)

            async with trio.open_nursery() as nursery:
                for i in range(12):
                    nursery.start_soon(write, ada, i)
                    if i % 3 == 0:
                        nursery.start_soon(write, bob, i)
            assert sorted(revs[ada]) == list(range(1, 13))
            assert sorted(revs[bob]) == list(range(1, 5))
            batch = await s.todos.changes_since(ada, 0)
            assert [c.rev for c in batch.changes] == list(range(1, 13))
            assert batch.rev == 12 and not batch.more and batch.horizon == 0
            assert (await s.todos.list_todos(bob)).rev == 4


async def test_update_patches_fields_and_takes_the_next_revision(backend: Backend) -> None:
    with trio.fail_after(20):
        async with backend.open() as s:
            user = await s.new_user()
            todo = (await s.todos.create_todo(user, TodoDraft("a", tags=("x",)))).change.todo
            assert todo is not None
            await trio.sleep(0.01)
            patch = TodoPatch({"done": True, "tags": ("y", "z"), "due": None}, if_rev=1)
            updated = (await s.todos.update_todo(user, todo.id, patch)).change.todo
            assert updated is not None
            assert (updated.title, updated.done, updated.tags, updated.rev) == ("a", True, ("y", "z"), 2)
            assert updated.created_at == todo.created_at and updated.updated_at > todo.updated_at
            assert await s.todos.get_todo(user, todo.id) == updated


async def test_if_rev_mismatch_conflicts_and_changes_nothing(backend: Backend) -> None:
    with trio.fail_after(20):
        async with backend.open() as s:
            user = await s.new_user()
            todo = (await s.todos.create_todo(user, TodoDraft("a"))).change.todo
            assert todo is not None
            await s.todos.update_todo(user, todo.id, TodoPatch({"title": "b"}))
            with pytest.raises(Conflict) as caught:
                await s.todos.update_todo(user, todo.id, TodoPatch({"title": "c"}, if_rev=1))
            assert caught.value.details == {"rev": 2}
            assert caught.value.message == "the todo changed since revision 1: it is at revision 2 now"
            with pytest.raises(Conflict):
                await s.todos.delete_todo(user, todo.id, if_rev=1)
            # the revisions the refused writes took were rolled back with them
            assert (await s.todos.list_todos(user)).rev == 2
            current = await s.todos.get_todo(user, todo.id)
            assert current is not None and current.title == "b"
            assert (await s.todos.create_todo(user, TodoDraft("next"))).change.rev == 3


async def test_unknown_foreign_and_malformed_ids_are_not_found(backend: Backend) -> None:
    with trio.fail_after(20):
        async with backend.open() as s:
            ada, bob = await s.new_user(), await s.new_user()
            todo = (await s.todos.create_todo(ada, TodoDraft("mine"))).change.todo
            assert todo is not None
            for user, todo_id in [(bob, todo.id), (ada, MISSING), (ada, "not-a-uuid")]:
                assert await s.todos.get_todo(user, todo_id) is None
                with pytest.raises(NotFound):
                    await s.todos.update_todo(user, todo_id, TodoPatch({"title": "x"}))
                with pytest.raises(NotFound):
                    await s.todos.delete_todo(user, todo_id)
            assert (await s.todos.list_todos(bob)).items == []
            assert (await s.todos.changes_since(bob, 0)).changes == []
            assert (await s.todos.list_todos(ada)).rev == 1  # the refused writes took nothing


async def test_delete_leaves_a_tombstone_in_the_feed(backend: Backend) -> None:
    with trio.fail_after(20):
        async with backend.open() as s:
            user = await s.new_user()
            keep = await create_in_order(s.todos, user, TodoDraft("keep"))
            gone = await create_in_order(s.todos, user, TodoDraft("gone"))
            deleted = (await s.todos.delete_todo(user, gone.id, if_rev=2)).change
            assert (deleted.op, deleted.id, deleted.rev, deleted.todo) == ("delete", gone.id, 3, None)
            assert await s.todos.get_todo(user, gone.id) is None
            assert (await s.todos.list_todos(user)).items == [keep]
            with pytest.raises(NotFound):
                await s.todos.delete_todo(user, gone.id)
            with pytest.raises(NotFound):
                await s.todos.update_todo(user, gone.id, TodoPatch({"title": "back"}))
            batch = await s.todos.changes_since(user, 1)
            assert [(c.rev, c.op, c.id) for c in batch.changes] == [(3, "delete", gone.id)]
            assert batch.rev == 3


async def test_idempotency_keys_replay_the_first_result(backend: Backend) -> None:
    with trio.fail_after(20):
        async with backend.open() as s:
            ada, bob = await s.new_user(), await s.new_user()
            first = await s.todos.create_todo(ada, TodoDraft("once"), idempotency_key="k1")
            again = await s.todos.create_todo(ada, TodoDraft("once"), idempotency_key="k1")
            assert again.replayed and again.change == first.change
            assert (await s.todos.list_todos(ada)).rev == 1
            assert len((await s.todos.list_todos(ada)).items) == 1
            with pytest.raises(InvalidInput):
                await s.todos.create_todo(ada, TodoDraft("other"), idempotency_key="k1")
            # keys are per user
            assert not (await s.todos.create_todo(bob, TodoDraft("once"), idempotency_key="k1")).replayed
            todo = first.change.todo
            assert todo is not None
            patch = TodoPatch({"done": True})
            u1 = await s.todos.update_todo(ada, todo.id, patch, idempotency_key="k2")
            u2 = await s.todos.update_todo(ada, todo.id, patch, idempotency_key="k2")
            assert u2.replayed and u2.change == u1.change and u1.change.rev == 2
            d1 = await s.todos.delete_todo(ada, todo.id, idempotency_key="k3")
            d2 = await s.todos.delete_todo(ada, todo.id, idempotency_key="k3")
            assert d2.replayed and d2.change == d1.change
            assert (await s.todos.list_todos(ada)).rev == 3


async def test_concurrent_retries_with_one_key_write_once(backend: Backend) -> None:
    with trio.fail_after(20):
        async with backend.open() as s:
            user = await s.new_user()
            results = []

            async def attempt() -> None:
                results.append(await s.todos.create_todo(user, TodoDraft("x"), idempotency_key="same"))

            async with trio.open_nursery() as nursery:
                for _ in range(5):
                    nursery.start_soon(attempt)
            assert sum(not r.replayed for r in results) == 1
            assert len({r.change for r in results}) == 1
            assert (await s.todos.list_todos(user)).rev == 1


async def test_pages_never_skip_nor_repeat_across_writes(backend: Backend) -> None:
    with trio.fail_after(30):
        async with backend.open() as s:
            user = await s.new_user()
            ids = [(await create_in_order(s.todos, user, TodoDraft(f"t{i}"))).id for i in range(7)]
            page = await s.todos.list_todos(user, limit=3)
            seen = [t.id for t in page.items]
            assert seen == ids[:3] and page.next_cursor is not None
            # between pages: one seen todo deleted, one unseen deleted, one new created
            await s.todos.delete_todo(user, ids[0])
            await s.todos.delete_todo(user, ids[4])
            new = await create_in_order(s.todos, user, TodoDraft("new"))
            cursor: str | None = page.next_cursor
            while cursor is not None:
                page = await s.todos.list_todos(user, limit=3, cursor=cursor)
                seen += [t.id for t in page.items]
                cursor = page.next_cursor
            assert seen == ids[:4] + ids[5:] + [new.id]
            assert page.rev == 10


async def test_filters_done_and_literal_case_insensitive_text(backend: Backend) -> None:
    with trio.fail_after(20):
        async with backend.open() as s:
            user = await s.new_user()
            titles = {"Buy MILK": False, "100% done_ok": True, "a.b*c": False, "plain": True}
            for title, done in titles.items():
                await create_in_order(s.todos, user, TodoDraft(title, notes="n", done=done))
            await create_in_order(s.todos, user, TodoDraft("other", notes="about milk"))

            async def titles_of(**filters: object) -> list[str]:
                return [t.title for t in (await s.todos.list_todos(user, **filters)).items]  # type: ignore[arg-type]

            assert await titles_of(done=True) == ["100% done_ok", "plain"]
            assert await titles_of(query="milk") == ["Buy MILK", "other"]
            assert await titles_of(query="milk", done=False) == ["Buy MILK", "other"]
            assert await titles_of(query="%") == ["100% done_ok"]
            assert await titles_of(query="_") == ["100% done_ok"]
            assert await titles_of(query="a.b*") == ["a.b*c"]
            assert await titles_of(query=".*") == []
            assert await titles_of(query="\\") == []


@pytest.mark.parametrize("cursor", ["", "garbage!", "W10", "WyIyMDI2LTAxLTAxIiwgIngiXQ"])
async def test_bad_cursors_are_invalid_input(backend: Backend, cursor: str) -> None:
    with trio.fail_after(20):
        async with backend.open() as s:
            user = await s.new_user()
            await s.todos.create_todo(user, TodoDraft("a"))
            if cursor == "":
                assert len((await s.todos.list_todos(user, cursor=cursor)).items) == 1
                return
            with pytest.raises(InvalidInput):
                await s.todos.list_todos(user, cursor=cursor)


async def test_cursor_format_is_shared(backend: Backend) -> None:
    with trio.fail_after(20):
        async with backend.open() as s:
            user = await s.new_user()
            first = await create_in_order(s.todos, user, TodoDraft("a"))
            await create_in_order(s.todos, user, TodoDraft("b"))
            page = await s.todos.list_todos(user, cursor=encode_cursor(first))
            assert [t.title for t in page.items] == ["b"]


async def test_changes_come_in_batches(backend: Backend) -> None:
    with trio.fail_after(20):
        async with backend.open() as s:
            user = await s.new_user()
            for i in range(5):
                await s.todos.create_todo(user, TodoDraft(f"t{i}"))
            batch = await s.todos.changes_since(user, 1, limit=2)
            assert [c.rev for c in batch.changes] == [2, 3] and batch.more and batch.rev == 3
            batch = await s.todos.changes_since(user, batch.rev, limit=2)
            assert [c.rev for c in batch.changes] == [4, 5] and not batch.more and batch.rev == 5
            batch = await s.todos.changes_since(user, 5)
            assert batch.changes == [] and batch.rev == 5
            empty = await s.todos.changes_since(await s.new_user(), 0)
            assert (empty.changes, empty.rev, empty.horizon) == ([], 0, 0)


async def test_purge_forgets_old_tombstones_and_raises_the_horizon(backend: Backend) -> None:
    with trio.fail_after(20):
        async with backend.open() as s:
            ada, bob = await s.new_user(), await s.new_user()
            todos = []
            for i in range(3):
                todo = (await s.todos.create_todo(ada, TodoDraft(f"t{i}"))).change.todo
                assert todo is not None
                todos.append(todo)
            await s.todos.delete_todo(ada, todos[0].id)  # rev 4
            await s.todos.delete_todo(ada, todos[1].id)  # rev 5
            await s.todos.update_todo(ada, todos[2].id, TodoPatch({"title": "x"}))  # rev 6
            await s.todos.create_todo(bob, TodoDraft("bob's"))
            assert await s.todos.purge_tombstones(3600) == 0
            await trio.sleep(0.01)
            assert await s.todos.purge_tombstones(0) == 2
            batch = await s.todos.changes_since(ada, 0)
            assert [c.rev for c in batch.changes] == [6] and batch.horizon == 5 and batch.rev == 6
            assert (await s.todos.changes_since(bob, 0)).horizon == 0
            assert await s.todos.purge_tombstones(0) == 0
            # the counter goes on past the horizon
            assert (await s.todos.create_todo(ada, TodoDraft("after"))).change.rev == 7
