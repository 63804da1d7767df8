"""GET /api/analytics/summary?days=N: per UTC day, todos created and completed and active
devices, for the caller, computed in the database; the same answers on every backend.
(Figures across day boundaries and time zones: tests/stores/test_audit_store_contract.py.)"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
import trio

from tests.api.support import Api, error_of
from tests.harness import User
from tests.stores.backends import BACKENDS, start_on_backend


@pytest.fixture(params=BACKENDS)
async def api(
    request: pytest.FixtureRequest, nursery: trio.Nursery, database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Api]:
    instance = await start_on_backend(request.param, nursery, database_url, monkeypatch)
    async with httpx.AsyncClient(base_url=instance.url, timeout=10) as client:
        yield Api(instance, client)


async def summary(api: Api, user: User, **params: Any) -> dict[str, Any]:
    r = await api.client.get("/api/analytics/summary", params=params, headers=user.headers)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def settled(api: Api, user: User, entries: int) -> None:
    """Wait until the user's audit trail (which the figures read) holds ``entries``."""
    while True:
        r = await api.client.get("/api/activity", params={"limit": 200}, headers=user.headers)
        if len(r.json()["entries"]) >= entries:
            return
        await trio.sleep(0.01)


async def test_today_counts_created_completed_and_devices(api: Api) -> None:
    with trio.fail_after(30):
        today = datetime.now(UTC).date()
        laptop = await api.register("laptop")
        phone = await api.login(laptop, "phone")
        await api.login(laptop, "tablet")  # logs in, does nothing more: still active today
        done_at_birth = await api.create(laptop, "done already", done=True)
        ticked = await api.create(laptop, "to tick")
        await api.create(phone, "left open")
        for _ in range(2):  # ticked twice: one completion
            r = await api.client.patch(f"/api/todos/{ticked['id']}", json={"done": True},
                                       headers=phone.headers)
            assert r.status_code == 200
        r = await api.client.patch(f"/api/todos/{done_at_birth['id']}", json={"title": "renamed"},
                                   headers=laptop.headers)
        assert r.status_code == 200
        r = await api.client.delete(f"/api/todos/{done_at_birth['id']}", headers=phone.headers)
        assert r.status_code == 204
        bob = await api.register("bob's")
        await api.create(bob, "bob's", done=True)
        await settled(api, laptop, 10)
        await settled(api, bob, 2)

        body = await summary(api, laptop, days=3)
        if datetime.now(UTC).date() != today:
            pytest.skip("the UTC day changed during the test")
        assert body["timezone"] == "UTC"
        assert (body["from"], body["to"]) == ((today - timedelta(days=2)).isoformat(), today.isoformat())
        assert body["days"] == [
            {"date": (today - timedelta(days=2)).isoformat(), "created": 0, "completed": 0, "active_devices": 0},
            {"date": (today - timedelta(days=1)).isoformat(), "created": 0, "completed": 0, "active_devices": 0},
            {"date": today.isoformat(), "created": 3, "completed": 2, "active_devices": 3},
        ]
        assert body["totals"] == {"created": 3, "completed": 2}
        theirs = await summary(api, bob, days=1)
        assert theirs["days"] == [{"date": today.isoformat(), "created": 1, "completed": 1, "active_devices": 1}]


async def test_days_default_bounds_and_auth(api: Api) -> None:
    with trio.fail_after(20):
        user = await api.register()
        body = await summary(api, user)
        days = [date.fromisoformat(d["date"]) for d in body["days"]]
        assert len(days) == 7 and days == sorted(days)
        assert all(b - a == timedelta(days=1) for a, b in zip(days, days[1:], strict=False))
        assert len((await summary(api, user, days=366))["days"]) == 366
        for bad in ("0", "367", "-1", "x"):
            r = await api.client.get("/api/analytics/summary", params={"days": bad}, headers=user.headers)
            error_of(r, 422, "invalid_input")
        error_of(await api.client.get("/api/analytics/summary"), 401)
