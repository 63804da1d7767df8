"""graphql-core's executor, made correct under Trio. The only module that knows how.

graphql-core 3.3.2 runs sibling async fields (and async list items, and ``is_type_of``
checks) through ``gather_with_cancel``, a module-level function of
``graphql.execution.executor`` built on ``asyncio.gather``. Under Trio any object with two
async fields then fails (``trio.run received unrecognized yield message <_GatheringFuture>``),
and under trio-asyncio it would run resolvers as asyncio tasks, where Trio calls fail. An
``Executor`` subclass cannot reach that name, so it is replaced, once, on import:

- ``gather_with_cancel`` becomes a nursery-based gather when called from Trio: every awaitable
  runs in its own task of a nursery owned by the awaiting field, so siblings really run
  concurrently; the first exception (a non-null field error bubbling up) cancels the others,
  the nursery waits until they are settled, then that exception alone is raised, as
  graphql-core expects. Called from asyncio it defers to the original, so the patch cannot
  break an asyncio user in the same process.
- ``TrioExecutor.settle_in_background`` replaces the executor's "settle these leftovers in
  background asyncio tasks" (used when a field fails synchronously while siblings' coroutines
  are pending): under Trio a coroutine does nothing until awaited, so nothing was started and
  closing them settles them.

``execute`` and ``subscribe`` here are graphql-core's, always with ``TrioExecutor``; the rest
of the package calls only these. The patch touches private names: graphql-core is pinned
exactly (``PINNED``), import fails loudly if the names moved, and
``tests/api/graphql/test_trio_execution.py`` fails if the fix stops working.

Cancellation: cancelling the task that awaits ``execute`` cancels every field task (they live
in nurseries below it); nothing outlives the call.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Awaitable, Callable
from inspect import CORO_CREATED, getcoroutinestate, iscoroutine
from typing import Any

import graphql
import sniffio
import trio
from graphql import DocumentNode, ExecutionResult, GraphQLSchema
from graphql.execution import executor as _executor_module
from graphql.execution.executor_throwing_on_incremental import (
    ExecutorThrowingOnIncremental,
)

PINNED = "3.3.2"

if not (
    callable(getattr(_executor_module, "gather_with_cancel", None))
    and callable(getattr(ExecutorThrowingOnIncremental, "settle_in_background", None))
):  # pragma: no cover - only with an unreviewed graphql-core
    raise ImportError(  # noqa: TRY004 - a missing name, not a wrong type
        f"graphql-core {graphql.version} moved the names nursery.api.graphql.trio_execution "
        f"patches (reviewed for {PINNED}): review the patch before upgrading"
    )

_asyncio_gather_with_cancel: Callable[..., Awaitable[list[Any]]] = (
    _executor_module.gather_with_cancel  # type: ignore[attr-defined]  # imported there, not exported
)


async def gather_with_cancel(*awaitables: Awaitable[Any]) -> list[Any]:
    """Await all ``awaitables`` concurrently; the first exception cancels the rest and is
    raised once they have all settled. Results are in the order given."""
    if sniffio.current_async_library() != "trio":
        return await _asyncio_gather_with_cancel(*awaitables)
    results: list[Any] = [None] * len(awaitables)
    failures: list[Exception] = []

    async def run(index: int, awaitable: Awaitable[Any], scope: trio.CancelScope) -> None:
        try:
            results[index] = await awaitable
        except Exception as exc:  # noqa: BLE001 - re-raised below, as graphql-core's gather does
            if not failures:
                failures.append(exc)
            scope.cancel()

    async with trio.open_nursery() as nursery:
        for index, awaitable in enumerate(awaitables):
            nursery.start_soon(run, index, awaitable, nursery.cancel_scope)
    if failures:
        raise failures[0]
    return results


class TrioExecutor(ExecutorThrowingOnIncremental):
    """graphql-core's executor (``@defer``/``@stream`` refused, as our schema has neither),
    with pending work settled the Trio way."""

    def settle_in_background(self, awaitables: list[Awaitable[Any]]) -> None:
        # Under Trio nothing runs until awaited: these were never started. Closing a
        # coroutine settles it; other awaitables hold no work.
        for awaitable in awaitables:
            _close_unstarted(awaitable)


def _close_unstarted(awaitable: Any) -> None:
    """Close a coroutine that never ran, and the never-run coroutines it was given (the
    executor wraps a resolver's coroutine in its own), so none warns "never awaited"."""
    if not iscoroutine(awaitable):
        return
    if getcoroutinestate(awaitable) == CORO_CREATED and awaitable.cr_frame is not None:
        arguments = list(awaitable.cr_frame.f_locals.values())
        awaitable.close()
        for argument in arguments:
            _close_unstarted(argument)


def _install() -> None:
    _executor_module.gather_with_cancel = gather_with_cancel  # type: ignore[attr-defined]


_install()


async def execute(
    schema: GraphQLSchema,
    document: DocumentNode,
    *,
    context_value: Any = None,
    variable_values: dict[str, Any] | None = None,
    operation_name: str | None = None,
) -> ExecutionResult:
    """Execute a query or mutation (already validated) under Trio."""
    result = graphql.execute(
        schema,
        document,
        context_value=context_value,
        variable_values=variable_values,
        operation_name=operation_name,
        executor_class=TrioExecutor,
    )
    if isinstance(result, ExecutionResult):
        return result
    return await result


async def subscribe(
    schema: GraphQLSchema,
    document: DocumentNode,
    *,
    context_value: Any = None,
    variable_values: dict[str, Any] | None = None,
    operation_name: str | None = None,
) -> AsyncIterable[ExecutionResult] | ExecutionResult:
    """Start a subscription (already validated): its stream of results, or the errors that
    prevented it. The caller iterates and closes the stream in one task."""
    result = graphql.subscribe(
        schema,
        document,
        context_value=context_value,
        variable_values=variable_values,
        operation_name=operation_name,
        executor_class=TrioExecutor,
    )
    if isinstance(result, Awaitable):
        result = await result
    return result


__all__ = ["PINNED", "TrioExecutor", "execute", "gather_with_cancel", "subscribe"]
