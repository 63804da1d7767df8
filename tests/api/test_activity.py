"""GET /api/activity: the caller's own audit trail (logins, logouts, revocations, todo
changes), newest first, on every backend of the audit log; and the audit buffer: when it
overflows, entries are dropped and counted, and requests do not slow down."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import trio

from nursery.stores.embedded import PrivatePostgres
from nursery.stores.postgres.audit import PostgresAuditStore
from tests.api.support import Api, error_of
from tests.harness import User, register, start_instance
from tests.stores.backends import BACKENDS, start_on_backend


@pytest.fixture(params=BACKENDS)
async def api(
    request: pytest.FixtureRequest, nursery: trio.Nursery, database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Api]:
    instance = await start_on_backend(request.param, nursery, database_url, monkeypatch)
    async with httpx.AsyncClient(base_url=instance.url, timeout=10) as client:
        yield Api(instance, client)


async def activity(api: Api, user: User, count: int, **params: Any) -> list[dict[str, Any]]:
    """The user's trail once it holds ``count`` entries (it is written a moment later)."""
    while True:
        r = await api.client.get("/api/activity", params=params, headers=user.headers)
        assert r.status_code == 200, r.text
        entries: list[dict[str, Any]] = r.json()["entries"]
        if len(entries) >= count:
            return entries
        await trio.sleep(0.01)


async def test_the_trail_is_the_callers_own_newest_first(api: Api) -> None:
    with trio.fail_after(30):
        laptop = await api.register("laptop")
        phone = await api.login(laptop, "phone")
        tablet = await api.login(laptop, "tablet")
        todo = await api.create(laptop, "buy milk")
        r = await api.client.patch(f"/api/todos/{todo['id']}", json={"done": True, "title": "milk!"},
                                   headers=phone.headers)
        assert r.status_code == 200
        # a refused write and an idempotent replay leave no entry
        r = await api.client.patch(f"/api/todos/{todo['id']}", json={"title": "x", "if_rev": 1},
                                   headers=phone.headers)
        assert r.status_code == 409
        for _ in range(2):
            r = await api.client.post("/api/todos", json={"title": "once"},
                                      headers={**laptop.headers, "Idempotency-Key": "k"})
            assert r.status_code == 201
        once = r.json()["todo"]
        r = await api.client.delete(f"/api/todos/{todo['id']}", headers=laptop.headers)
        assert r.status_code == 204
        r = await api.client.delete(f"/api/sessions/{tablet.session_id}", headers=laptop.headers)
        assert r.status_code == 204
        r = await api.client.post("/api/auth/logout", headers=phone.headers)
        assert r.status_code == 204
        bob = await api.register("bob's phone")
        await api.create(bob, "bob's todo")

        entries = await activity(api, laptop, 9)
        assert [(e["kind"], e["session"]) for e in entries] == [
            ("logout", phone.session_id),
            ("revoke", laptop.session_id),
            ("todo.delete", laptop.session_id),
            ("todo.create", laptop.session_id),
            ("todo.update", phone.session_id),
            ("todo.create", laptop.session_id),
            ("login", tablet.session_id),
            ("login", phone.session_id),
            ("login", laptop.session_id),
        ]
        logout, revoke, delete, create_once, update, create, *_, register = entries
        assert [e["device"] for e in entries] == [
            "phone", "laptop", "laptop", "laptop", "phone", "laptop", "tablet", "phone", "laptop"]
        assert {e["instance"] for e in entries} == {api.instance.name}
        assert register["details"] == {"method": "register"}
        assert entries[-2]["details"] == {"method": "password"}
        assert revoke["details"] == {"session": tablet.session_id, "device": "tablet"}
        assert logout["details"] == {} and logout["todo"] is None
        assert (create["todo"], create["done"], create["details"]) == (todo["id"], False, {"rev": 1})
        assert (update["todo"], update["done"], update["details"]) == (
            todo["id"], True, {"rev": 2, "fields": ["done", "title"]})
        assert (create_once["todo"], delete["todo"], delete["done"]) == (once["id"], todo["id"], None)
        stamps = [e["at"] for e in entries]
        assert stamps == sorted(stamps, reverse=True) and all(s.endswith("Z") for s in stamps)
        assert len({e["id"] for e in entries}) == 9

        # another device of the same user sees the same trail; another user only theirs
        desk = await api.login(laptop, "desk")
        seen_from_desk = await activity(api, desk, 10)
        assert seen_from_desk[0]["kind"] == "login" and seen_from_desk[0]["device"] == "desk"
        assert seen_from_desk[1:] == entries
        theirs = await activity(api, bob, 2)
        assert [(e["kind"], e["session"]) for e in theirs] == [
            ("todo.create", bob.session_id), ("login", bob.session_id)]


async def test_limit_and_auth(api: Api) -> None:
    with trio.fail_after(20):
        user = await api.register()
        for i in range(3):
            await api.create(user, f"t{i}")
        entries = await activity(api, user, 4)
        r = await api.client.get("/api/activity", params={"limit": 2}, headers=user.headers)
        assert r.json()["entries"] == entries[:2]
        for bad in ("0", "201", "x"):
            r = await api.client.get("/api/activity", params={"limit": bad}, headers=user.headers)
            error_of(r, 422, "invalid_input")
        error_of(await api.client.get("/api/activity"), 401)


async def test_an_overflowing_audit_buffer_drops_and_counts_without_slowing_requests(
    nursery: trio.Nursery, database_url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A one-entry buffer and a flusher stuck on a database that never answers."""
    stuck = trio.Event()

    async def never_answers(self: PostgresAuditStore, entries: list[Any]) -> None:
        await stuck.wait()

    monkeypatch.setattr(PostgresAuditStore, "append_audit", never_answers)
    with trio.fail_after(30):
        instance = await start_on_backend(
            "postgres", nursery, database_url, monkeypatch, audit_buffer_size=1, audit_batch_size=1,
        )
        async with httpx.AsyncClient(base_url=instance.url, timeout=10) as client:
            api = Api(instance, client)
            user = await api.register()
            slowest = 0.0
            for i in range(40):
                started = time.perf_counter()
                await api.create(user, f"t{i}")
                slowest = max(slowest, time.perf_counter() - started)
            # the audit store never answers: a request that waited for it would never finish,
            # or fail after the store's 5 s timeout
            assert slowest < 2.5, slowest
            metrics = (await client.get("/metrics")).text
            counters = {
                name: float(line.split()[-1])
                for line in metrics.splitlines()
                for name in ("nursery_audit_entries_dropped_total", "nursery_audit_entries_recorded_total",
                             "nursery_audit_buffer_used")
                if line.startswith(name + " ")
            }
            # 41 entries: one in the stuck write, one in the buffer, the rest dropped
            assert counters == {
                "nursery_audit_entries_recorded_total": 2.0,
                "nursery_audit_entries_dropped_total": 39.0,
                "nursery_audit_buffer_used": 1.0,
            }
            r = await client.get("/api/activity", headers=user.headers)
            assert r.status_code == 200  # reading the trail does not wait for the writer
        stuck.set()
        instance.stop()


async def test_an_instance_prunes_entries_older_than_the_retention(
    nursery: trio.Nursery, database_url: str, pg_server: PrivatePostgres
) -> None:
    """NURSERY_AUDIT_RETENTION_DAYS at work: an instance started with a 5-day retention
    deletes a user's 10-day-old entries (its first round runs at start), keeps the new one,
    and counts what it deleted in its metrics."""
    with trio.fail_after(30):
        first = await start_instance(nursery, database_url)  # creates the schema; keeps 400 days
        async with httpx.AsyncClient(timeout=10) as client:
            user = await register(client, first.url)
            database = database_url.rsplit("/", 1)[1]
            pg_server.execute(
                "INSERT INTO audit_log (id, user_id, kind, at, seq) SELECT gen_random_uuid(),"
                f" '{user.user_id}', 'login', now() - interval '10 days', n"
                " FROM generate_series(1, 3) n",
                database=database,
            )
            while True:  # 3 old logins + the sign-up's (written a moment later)
                trail = await client.get(f"{first.url}/api/activity", headers=user.headers)
                if len(trail.json()["entries"]) == 4:
                    break
                await trio.sleep(0.02)

            second = await start_instance(nursery, database_url, audit_retention_days=5)
            while True:
                trail = await client.get(f"{second.url}/api/activity", headers=user.headers)
                if len(trail.json()["entries"]) == 1:
                    break
                await trio.sleep(0.05)
            assert trail.json()["entries"][0]["device"] == "laptop"  # the sign-up's login
            metrics = (await client.get(f"{second.url}/metrics")).text
            assert "nursery_audit_entries_pruned_total 3.0" in metrics
