"""The session cache's own rules (service/session_cache.py); across real instances in
tests/api/test_revocation_across_instances.py."""

from __future__ import annotations

from datetime import UTC, datetime

from nursery.models import Session
from nursery.service.session_cache import SessionCache

NOW = datetime(2026, 11, 26, tzinfo=UTC)


def session(sid: str) -> Session:
    now = NOW
    return Session(id=sid, user_id="u1", device="phone", created_at=now, last_seen_at=now)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_cached_session_is_used_until_its_ttl() -> None:
    clock = Clock()
    cache = SessionCache(ttl=10, clock=clock)
    assert cache.get("s1") is None
    cache.put(session("s1"), cache.generation)
    clock.now += 9.9
    assert cache.get("s1") == session("s1")
    clock.now += 0.2
    assert cache.get("s1") is None
    assert (cache.hits, cache.misses) == (1, 2)


def test_a_forgotten_session_is_gone_and_a_read_that_raced_it_is_not_cached() -> None:
    cache = SessionCache()
    cache.put(session("s1"), cache.generation)
    before_read = cache.generation  # a request starts reading s2 from the store...
    cache.forget("s1")  # ...while a revocation arrives
    cache.put(session("s2"), before_read)  # the read may predate the revocation: not kept
    assert cache.get("s1") is None and cache.get("s2") is None
    cache.put(session("s2"), cache.generation)
    assert cache.get("s2") is not None


def test_nothing_cached_is_trusted_while_the_broker_is_down() -> None:
    live = True
    cache = SessionCache(broker_live=lambda: live)
    cache.put(session("s1"), cache.generation)
    live = False
    assert cache.get("s1") is None
    cache.put(session("s1"), cache.generation)  # not kept either
    live = True
    assert cache.get("s1") is None and len(cache) == 0


def test_capacity_evicts_the_oldest_and_ttl_zero_caches_nothing() -> None:
    cache = SessionCache(capacity=2)
    for sid in ("s1", "s2", "s3"):
        cache.put(session(sid), cache.generation)
    assert [cache.get(s) is not None for s in ("s1", "s2", "s3")] == [False, True, True]
    off = SessionCache(ttl=0)
    off.put(session("s1"), off.generation)
    assert off.get("s1") is None
