"""The asyncio-only drivers (asyncpg, PyMongo's async API) run on an asyncio loop of their own
(uvloop), in a thread of its own: Trio hands each store operation over whole and is woken
when it is done.

Why a thread, not an asyncio loop on top of Trio (trio-asyncio, as before): on these
machines a write of a todo cost ~700 µs of CPU through trio-asyncio and ~300 µs this way,
a device's catch-up read ~650 against ~260 (``bench/drivers.py``, bench/README.md). Running an
asyncio loop inside Trio's was most of the drivers' cost; two thread wake-ups per operation
are much less. The two threads share the GIL, but each waits in its own ``epoll`` most of
the time, and every operation crosses once (the stores write a whole operation as one
coroutine), so neither holds the other up for long.

Lifetime: ``open_asyncio_thread`` starts the loop before the stores open and stops it (after
cancelling what is left on it) once they are closed. Only ``stores/`` use it.

Cancellation: cancelling ``run`` cancels the asyncio task (asyncpg then cancels its query on
the server) and waits, shielded and for at most ``CANCEL_GRACE`` seconds, until the task has
ended, so the connection it held is back in its pool before ``run`` returns.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import ParamSpec, TypeVar

import trio
import uvloop

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

CANCEL_GRACE = 5.0  # seconds a cancelled operation may take to unwind on the asyncio side
STOP_TIMEOUT = 10.0


class AsyncioThread:
    """Runs coroutines on the asyncio loop of the thread; awaited from Trio."""

    def __init__(self, loop: asyncio.AbstractEventLoop, token: trio.lowlevel.TrioToken) -> None:
        self._loop = loop
        self._token = token

    async def run(self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """``await fn(*args, **kwargs)`` on the asyncio loop; its result or its exception."""
        done = trio.Event()
        started: list[asyncio.Task[T]] = []

        def start() -> None:  # on the asyncio thread, as everything the task touches
            task = asyncio.ensure_future(fn(*args, **kwargs))
            task.add_done_callback(lambda _: self._token.run_sync_soon(done.set))
            started.append(task)

        def cancel() -> None:  # on the asyncio thread, after ``start`` (callbacks keep order)
            started[0].cancel()

        self._loop.call_soon_threadsafe(start)
        try:
            await done.wait()
        except BaseException:  # cancelled (by a deadline, or the caller): unwind there too
            self._loop.call_soon_threadsafe(cancel)
            with trio.CancelScope(shield=True), trio.move_on_after(CANCEL_GRACE):
                await done.wait()
            raise
        return started[0].result()


def _serve(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()


@asynccontextmanager
async def open_asyncio_thread() -> AsyncIterator[AsyncioThread]:
    """An asyncio loop running in a thread for the block's duration."""
    loop = uvloop.new_event_loop()
    thread = threading.Thread(target=_serve, args=(loop,), name="nursery-asyncio", daemon=True)
    thread.start()
    try:
        yield AsyncioThread(loop, trio.lowlevel.current_trio_token())
    finally:
        loop.call_soon_threadsafe(loop.stop)
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(thread.join, STOP_TIMEOUT)
        if thread.is_alive():
            log.warning("the asyncio thread did not stop within %.0f s", STOP_TIMEOUT)
