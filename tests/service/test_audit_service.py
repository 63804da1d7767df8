"""The audit recorder and flusher (nursery/service/audit.py) and the activity summary
(nursery/service/activity.py), against in-memory stores: bounds, drop policy, batching,
retries, the final flush, and the analytics window."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta, timezone

import pytest
import trio
import trio.testing

from nursery.errors import StoreUnavailable
from nursery.service.accounts import Principal
from nursery.service.activity import Activity
from nursery.service.audit import Audit
from nursery.stores.audit import LOGIN, AuditEntry, DayFigures

USER = "7d0c1e3c-5d0a-4b7e-9b8e-0d6f6f1c2a11"
SESSION = "0f5b0c6e-2c55-4f55-a7e4-6d3c8a9e4b10"


class MemoryAudit:
    """An ``AuditStore`` that keeps batches; ``gate`` closed: writes wait; ``failures``: the
    next writes raise ``StoreUnavailable``."""

    def __init__(self) -> None:
        self.batches: list[list[AuditEntry]] = []
        self.gate = trio.Event()
        self.gate.set()
        self.failures = 0
        self.attempts = 0

    async def append_audit(self, entries: list[AuditEntry]) -> None:
        self.attempts += 1
        await self.gate.wait()
        if self.failures:
            self.failures -= 1
            raise StoreUnavailable("down")
        self.batches.append(list(entries))

    @property
    def stored(self) -> list[AuditEntry]:
        return [e for batch in self.batches for e in batch]

    async def recent_audit(self, user_id: str, limit: int) -> list[AuditEntry]:
        return self.stored[::-1][:limit]

    async def daily_figures(self, user_id: str, start: datetime, end: datetime) -> list[DayFigures]:
        raise NotImplementedError


def record(audit: Audit, n: int) -> None:
    for i in range(n):
        audit.record(LOGIN, USER, SESSION, "laptop", details={"i": i})


async def test_a_full_buffer_drops_and_counts_without_blocking() -> None:
    store = MemoryAudit()
    store.gate = trio.Event()  # the flusher's writes hang until we say
    audit = Audit("test", capacity=5, batch_size=500, linger=0)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(audit.run, store)
            started = time.perf_counter()
            record(audit, 10_000)
            elapsed = time.perf_counter() - started
            # the waiting flusher was handed the first entry; 5 more fill the buffer
            assert (audit.recorded, audit.dropped, audit.buffered) == (6, 9_994, 5)
            await trio.testing.wait_all_tasks_blocked()  # the flusher took all 6, is stuck writing
            assert audit.buffered == 0 and store.attempts == 1
            record(audit, 100)
            assert (audit.recorded, audit.dropped, audit.buffered) == (11, 10_089, 5)
            store.gate.set()
            while audit.stored < 11:
                await trio.sleep(0.001)
            nursery.cancel_scope.cancel()
    # 10,100 calls, none waiting for the stuck write: well under 10 µs each here
    assert elapsed < 1.0, elapsed
    assert [e.details["i"] for e in store.stored] == [0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4]
    assert len({e.id for e in store.stored}) == 11


async def test_entries_go_out_in_bounded_batches_in_order() -> None:
    store = MemoryAudit()
    audit = Audit("i-1", capacity=100, batch_size=7)
    record(audit, 20)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(audit.run, store)
            while audit.stored < 20:
                await trio.sleep(0.001)
            nursery.cancel_scope.cancel()
    assert [len(b) for b in store.batches] == [7, 7, 6]
    entries = store.stored
    assert [e.details["i"] for e in entries] == list(range(20))
    assert [e.seq for e in entries] == sorted(e.seq for e in entries)
    first = entries[0]
    assert (first.kind, first.user_id, first.session_id, first.device, first.instance) == (
        LOGIN, USER, SESSION, "laptop", "i-1")
    assert first.at.tzinfo is UTC and first.at.microsecond % 1000 == 0


async def test_entries_arriving_together_share_one_write(autojump_clock: trio.abc.Clock) -> None:
    store = MemoryAudit()
    audit = Audit("test", capacity=100, batch_size=100, linger=0.05)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(audit.run, store)
            for i in range(10):  # one every 4 ms: within the first entry's 50 ms linger
                audit.record(LOGIN, USER, SESSION, "laptop", details={"i": i})
                await trio.sleep(0.004)
            await trio.sleep(0.2)
            audit.record(LOGIN, USER, SESSION, "laptop", details={"i": 10})
            while audit.stored < 11:
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    assert [len(b) for b in store.batches] == [10, 1]


async def test_an_unavailable_store_gets_the_same_batch_again(autojump_clock: trio.abc.Clock) -> None:
    store = MemoryAudit()
    store.failures = 3
    audit = Audit("test", capacity=100, batch_size=100)
    record(audit, 4)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(audit.run, store)
            while audit.stored < 4:
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    assert store.attempts == 4 and [len(b) for b in store.batches] == [4]
    assert (audit.stored, audit.lost, audit.dropped) == (4, 0, 0)


async def test_shutdown_flushes_what_is_buffered() -> None:
    store = MemoryAudit()
    store.gate = trio.Event()
    audit = Audit("test", capacity=100, batch_size=3)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(audit.run, store)
            record(audit, 8)
            await trio.testing.wait_all_tasks_blocked()  # first batch of 3 stuck writing
            store.gate.set()
            nursery.cancel_scope.cancel()  # before the flusher got back to the buffer
    assert audit.stored == 8 and audit.lost == 0


async def test_shutdown_gives_up_after_its_deadline_and_counts_the_loss(
    autojump_clock: trio.abc.Clock,
) -> None:
    store = MemoryAudit()
    store.gate = trio.Event()  # never opens
    audit = Audit("test", capacity=100, batch_size=3, final_flush_timeout=1.0)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(audit.run, store)
            record(audit, 8)
            await trio.testing.wait_all_tasks_blocked()
            cancelled_at = trio.current_time()
            nursery.cancel_scope.cancel()
    assert trio.current_time() - cancelled_at == pytest.approx(1.0)
    assert (audit.stored, audit.lost) == (0, 8)


def test_a_buffer_must_hold_something() -> None:
    with pytest.raises(ValueError):
        Audit("test", capacity=0)


class Figures(MemoryAudit):
    def __init__(self, figures: list[DayFigures]) -> None:
        super().__init__()
        self.figures = figures
        self.asked: list[tuple[datetime, datetime]] = []

    async def daily_figures(self, user_id: str, start: datetime, end: datetime) -> list[DayFigures]:
        self.asked.append((start, end))
        return [f for f in self.figures if start.date() <= f.day < end.date()]


@pytest.mark.parametrize("now", [
    datetime(2026, 3, 3, 0, 0, tzinfo=UTC),
    datetime(2026, 3, 3, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(2026, 3, 4, 1, 30, tzinfo=timezone(timedelta(hours=5))),  # 03-03 20:30 UTC
    datetime(2026, 3, 2, 20, 0, tzinfo=timezone(timedelta(hours=-8))),  # 03-03 04:00 UTC
])
async def test_the_summary_covers_whole_utc_days_up_to_today(now: datetime) -> None:
    store = Figures([
        DayFigures(date(2026, 2, 28), 9, 9, 9),  # before the window
        DayFigures(date(2026, 3, 1), 2, 1, 1),
        DayFigures(date(2026, 3, 3), 0, 4, 2),
    ])
    activity = Activity(store, clock=lambda: now)
    summary = await activity.summary(Principal(USER, SESSION), days=3)
    assert store.asked == [(datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 4, tzinfo=UTC))]
    assert summary == {
        "timezone": "UTC",
        "from": "2026-03-01",
        "to": "2026-03-03",
        "days": [
            {"date": "2026-03-01", "created": 2, "completed": 1, "active_devices": 1},
            {"date": "2026-03-02", "created": 0, "completed": 0, "active_devices": 0},
            {"date": "2026-03-03", "created": 0, "completed": 4, "active_devices": 2},
        ],
        "totals": {"created": 2, "completed": 5},
    }


async def test_one_day_is_today_only() -> None:
    store = Figures([])
    activity = Activity(store, clock=lambda: datetime(2026, 12, 31, 23, 0, tzinfo=UTC))
    summary = await activity.summary(Principal(USER, SESSION), days=1)
    assert store.asked == [(datetime(2026, 12, 31, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))]
    assert summary["days"] == [{"date": "2026-12-31", "created": 0, "completed": 0, "active_devices": 0}]
