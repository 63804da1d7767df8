"""The ONE contract of ``AuditStore`` (nursery/stores/audit.py) on every backend: the trail
reads back newest first and per user, a retried batch writes nothing twice, and the daily
analytics match figures computed by hand, across UTC day boundaries, from instants given in
other time zones, identically on every backend."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import trio

from nursery.stores.audit import (
    LOGIN,
    LOGOUT,
    REVOKE,
    TODO_CREATE,
    TODO_DELETE,
    TODO_UPDATE,
    AuditEntry,
    DayFigures,
    to_millisecond,
)
from tests.stores.backends import Backend

ADA, BOB = str(uuid.uuid4()), str(uuid.uuid4())
S1, S2, S3, S9 = (str(uuid.uuid4()) for _ in range(4))
T1, T2, T3, T4, T9 = (str(uuid.uuid4()) for _ in range(5))
MINUS_6 = timezone(timedelta(hours=-6))
PLUS_9 = timezone(timedelta(hours=9))
_seq = iter(range(1_000_000))


def entry(at: datetime, kind: str, actor: str | None, *, user: str = ADA,
          todo: str | None = None, done: bool | None = None, **details: Any) -> AuditEntry:
    return AuditEntry(
        id=str(uuid.uuid4()), user_id=user, kind=kind, at=to_millisecond(at), seq=next(_seq),
        session_id=actor, device=f"device of {actor}", instance="test", todo_id=todo,
        done=done, details=details,
    )


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0,
        microsecond: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, microsecond, tzinfo=UTC)


# A user's three days, 2026-03-01..03 (UTC); the comments give each entry's UTC day.
HISTORY = [
    entry(utc(2026, 2, 28, 23, 59, 59, 999000), LOGIN, S1),                     # before: out
    entry(utc(2026, 3, 1), LOGIN, S1, method="password"),                       # 03-01
    entry(utc(2026, 3, 1, 10), TODO_CREATE, S1, todo=T1, done=False, rev=1),     # 03-01
    entry(datetime(2026, 3, 1, 18, 30, tzinfo=MINUS_6), TODO_CREATE, S2,        # 03-02 00:30Z
          todo=T2, done=True, rev=2),
    entry(utc(2026, 3, 1, 20), TODO_UPDATE, S1, todo=T1, done=True, rev=3),      # 03-01
    entry(utc(2026, 3, 1, 23, 59, 59, 999000), TODO_UPDATE, S1, todo=T1,         # 03-01, again
          done=True, rev=4),
    entry(datetime(2026, 3, 2, 9, 0, tzinfo=PLUS_9), TODO_UPDATE, S3,            # 03-02 00:00Z
          todo=T1, done=False, rev=5),
    entry(utc(2026, 3, 2, 12), TODO_UPDATE, S2, todo=T1, done=True, rev=6),      # 03-02
    entry(utc(2026, 3, 2, 13), TODO_UPDATE, S2, todo=T3, rev=7, fields=["title"]),  # 03-02
    entry(utc(2026, 3, 2, 14), TODO_DELETE, S2, todo=T2, rev=8),                 # 03-02
    entry(utc(2026, 3, 2, 23, 59, 59, 999000), TODO_CREATE, S1, todo=T3,         # 03-02
          done=True, rev=9),
    entry(utc(2026, 3, 3, 5), REVOKE, S1, session=S3),                           # 03-03
    entry(utc(2026, 3, 3, 6), LOGOUT, S2),                                       # 03-03
    entry(utc(2026, 3, 3, 7), LOGOUT, None),                                     # 03-03, no device
    entry(utc(2026, 3, 4), TODO_CREATE, S1, todo=T4, done=True, rev=10),         # end: out
    entry(utc(2026, 3, 1, 12), TODO_CREATE, S9, user=BOB, todo=T9, done=True),   # someone else
]
EXPECTED = [
    # created: T1 | completed: T1 (twice, counted once) | devices: S1
    DayFigures(date(2026, 3, 1), created=1, completed=1, active_devices=1),
    # created: T2, T3 | completed: T2, T1 (ticked again), T3 | devices: S2, S3, S1
    DayFigures(date(2026, 3, 2), created=2, completed=3, active_devices=3),
    # devices: S1, S2 (the entry without a session is not a device)
    DayFigures(date(2026, 3, 3), created=0, completed=0, active_devices=2),
]


async def test_daily_figures_match_hand_computed_ones(backend: Backend) -> None:
    with trio.fail_after(20):
        async with backend.open() as s:
            await s.audit.append_audit(HISTORY)
            got = await s.audit.daily_figures(ADA, utc(2026, 3, 1), utc(2026, 3, 4))
            assert got == EXPECTED
            # a narrower window cuts at UTC midnight
            assert await s.audit.daily_figures(ADA, utc(2026, 3, 2), utc(2026, 3, 3)) == EXPECTED[1:2]
            # the entry at 23:59:59.999 on 02-28 and the one at 03-04 00:00 are their own days
            edges = await s.audit.daily_figures(ADA, utc(2026, 2, 28), utc(2026, 3, 5))
            assert [f.day for f in edges] == [date(2026, 2, 28), *(f.day for f in EXPECTED), date(2026, 3, 4)]
            assert edges[-1] == DayFigures(date(2026, 3, 4), created=1, completed=1, active_devices=1)
            bob = await s.audit.daily_figures(BOB, utc(2026, 3, 1), utc(2026, 3, 4))
            assert bob == [DayFigures(date(2026, 3, 1), created=1, completed=1, active_devices=1)]
            assert await s.audit.daily_figures(str(uuid.uuid4()), utc(2026, 1, 1), utc(2027, 1, 1)) == []


async def test_the_trail_reads_back_newest_first_per_user(backend: Backend) -> None:
    with trio.fail_after(20):
        async with backend.open() as s:
            await s.audit.append_audit(HISTORY)
            mine = [e for e in HISTORY if e.user_id == ADA]
            newest_first = sorted(mine, key=lambda e: (e.at, e.seq), reverse=True)
            got = await s.audit.recent_audit(ADA, 100)
            assert got == newest_first  # every field, instants in UTC
            assert all(e.at.utcoffset() == timedelta(0) for e in got)
            assert await s.audit.recent_audit(ADA, 3) == newest_first[:3]
            assert [e.user_id for e in await s.audit.recent_audit(BOB, 100)] == [BOB]
            assert await s.audit.recent_audit("not-a-uuid", 10) == []


async def test_same_instant_entries_keep_their_recording_order(backend: Backend) -> None:
    with trio.fail_after(20):
        async with backend.open() as s:
            moment = utc(2026, 5, 1, 12)
            burst = [entry(moment, TODO_UPDATE, S1, todo=T1, rev=i) for i in range(5)]
            await s.audit.append_audit(burst)
            got = await s.audit.recent_audit(ADA, 10)
            assert [e.details["rev"] for e in got] == [4, 3, 2, 1, 0]


async def test_a_retried_batch_writes_nothing_twice(backend: Backend) -> None:
    with trio.fail_after(20):
        async with backend.open() as s:
            first, second = HISTORY[:6], HISTORY[3:9]  # overlapping
            await s.audit.append_audit(first)
            await s.audit.append_audit(second)
            await s.audit.append_audit(first)
            await s.audit.append_audit([])
            got = await s.audit.recent_audit(ADA, 100)
            assert sorted(e.id for e in got) == sorted(e.id for e in HISTORY[:9] if e.user_id == ADA)


async def test_entries_with_malformed_ids_are_left_out_not_fatal(backend: Backend) -> None:
    with trio.fail_after(20):
        async with backend.open() as s:
            good = entry(utc(2026, 5, 1), LOGIN, S1)
            bad = entry(utc(2026, 5, 1), LOGIN, "not-a-session")
            await s.audit.append_audit([bad, good])
            assert [e.id for e in await s.audit.recent_audit(ADA, 10)] == [good.id]
