"""The guard of ``nursery.api.graphql.trio_execution``: fails if graphql-core stops running
sibling fields concurrently under Trio, stops cancelling them on a non-null error, runs
anything on asyncio, or breaks subscriptions. No database: a schema made for the purpose."""

from __future__ import annotations

import gc
import warnings
from collections.abc import AsyncIterator
from typing import Any

import graphql
import trio
from ariadne import ObjectType, QueryType, SubscriptionType, make_executable_schema
from graphql import parse
from graphql.execution import executor

from nursery.api.graphql import trio_execution
from nursery.api.graphql.trio_execution import execute, subscribe

SDL = """
type Query { a: Int b: Int c: Int items: [Int] parent: Parent }
type Parent { boom: Int! slow: Int later: Int syncBoom: Int! }
type Subscription { ticks: Tick }
type Tick { n: Int double: Int square: Int }
"""


class Probe:
    """Resolvers that can only finish if their siblings run at the same time."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.started = 0
        self.all_started = trio.Event()
        self.cancelled: list[str] = []
        self.ran: list[str] = []

    async def rendezvous(self, *_: Any) -> int:
        self.started += 1
        if self.started == self.expected:
            self.all_started.set()
        await self.all_started.wait()  # sequential execution would wait here forever
        return self.started

    async def boom(self, *_: Any) -> int:
        await trio.sleep(0.01)
        raise ValueError("boom")

    async def slow(self, *_: Any) -> int:
        self.ran.append("slow")
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            self.cancelled.append("slow")
            raise
        raise AssertionError("unreachable")

    def sync_boom(self, *_: Any) -> int:
        raise ValueError("sync boom")


def make_schema(probe: Probe) -> graphql.GraphQLSchema:
    query, parent, subscription, tick = QueryType(), ObjectType("Parent"), SubscriptionType(), ObjectType("Tick")
    for name in ("a", "b", "c"):
        query.set_field(name, probe.rendezvous)
    query.set_field("items", lambda *_: [probe.rendezvous() for _ in range(probe.expected)])
    query.set_field("parent", lambda *_: {})
    parent.set_field("boom", probe.boom)
    parent.set_field("slow", probe.slow)
    parent.set_field("later", probe.slow)
    parent.set_field("syncBoom", probe.sync_boom)

    async def ticks(*_: Any) -> AsyncIterator[int]:
        for n in range(3):
            await trio.lowlevel.checkpoint()
            yield n

    async def double(n: int, *_: Any) -> int:
        await trio.sleep(0.01)
        return 2 * n

    async def square(n: int, *_: Any) -> int:
        await trio.sleep(0.01)
        return n * n

    subscription.set_source("ticks", ticks)
    subscription.set_field("ticks", lambda n, *_: n)
    tick.set_field("n", lambda n, *_: n)
    tick.set_field("double", double)
    tick.set_field("square", square)
    return make_executable_schema(SDL, query, parent, subscription, tick, convert_names_case=True)


def test_the_patch_is_in_place_for_the_pinned_graphql_core() -> None:
    # Upgrading graphql-core means reviewing trio_execution first: this fails until then.
    assert graphql.version == trio_execution.PINNED
    assert executor.gather_with_cancel is trio_execution.gather_with_cancel


async def test_sibling_async_fields_run_concurrently() -> None:
    probe = Probe(expected=3)
    with trio.fail_after(5):
        result = await execute(make_schema(probe), parse("{ a b c }"))
    assert result.errors is None, result.errors
    assert result.data == {"a": 3, "b": 3, "c": 3}


async def test_async_list_items_run_concurrently() -> None:
    probe = Probe(expected=4)
    with trio.fail_after(5):
        result = await execute(make_schema(probe), parse("{ items }"))
    assert result.errors is None, result.errors
    assert result.data == {"items": [4, 4, 4, 4]}


async def test_a_non_null_error_cancels_its_siblings() -> None:
    probe = Probe(expected=1)
    with trio.fail_after(5):  # without cancellation ``slow`` would never finish
        result = await execute(make_schema(probe), parse("{ parent { slow boom later } }"))
    assert result.data == {"parent": None}
    assert [e.message for e in result.errors or []] == ["boom"]
    assert sorted(probe.cancelled) == ["slow", "slow"]  # both siblings, settled before the answer


async def test_a_synchronous_non_null_error_never_starts_pending_siblings() -> None:
    """graphql-core would 'settle' the pending sibling in the background on asyncio, which
    under Trio cannot run a Trio resolver. Ours closes it."""
    probe = Probe(expected=1)
    with trio.fail_after(5), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = await execute(make_schema(probe), parse("{ parent { slow syncBoom } }"))
        await trio.sleep(0.05)  # anything scheduled in the background would run now
        gc.collect()  # a coroutine dropped unclosed would warn "never awaited" now
    assert result.data == {"parent": None}
    assert [e.message for e in result.errors or []] == ["sync boom"]
    assert probe.ran == []
    assert not [w for w in caught if "never awaited" in str(w.message)]


async def test_the_outer_cancel_scope_cancels_every_field() -> None:
    probe = Probe(expected=1)
    with trio.move_on_after(0.1) as scope:
        await execute(make_schema(probe), parse("{ parent { slow later } }"))
    assert scope.cancelled_caught
    assert probe.cancelled == ["slow", "slow"]


async def test_a_subscription_streams_events_with_concurrent_fields() -> None:
    probe = Probe(expected=1)
    with trio.fail_after(5):
        stream = await subscribe(make_schema(probe), parse("subscription { ticks { n double square } }"))
        assert not isinstance(stream, graphql.ExecutionResult), stream
        results = [result async for result in stream]  # type: ignore[union-attr]
    assert [r.data for r in results] == [
        {"ticks": {"n": n, "double": 2 * n, "square": n * n}} for n in range(3)
    ]
    assert all(r.errors is None for r in results)


