"""The audit trail: who did what, when, from which device, on which instance.

Requests never wait for the audit log. ``Audit.record`` puts an entry in a bounded in-memory
buffer and returns at once; ``Audit.run``, a task owned by the instance (``run_background``),
writes what has gathered in batches of at most ``batch_size``.

Bounds and policy:

- The buffer holds at most ``capacity`` entries (a few hundred bytes each; an idle flusher is
  handed the first one directly). When it is full, ``record`` drops the new entry and counts
  it (``dropped``, the metric ``nursery_audit_entries_dropped_total``): an audit log that
  falls behind costs entries, never request latency. The analytics, which read the log, then
  undercount.
- A batch the store refuses as unavailable is kept and written again after a backoff
  (``RETRY_INITIAL`` doubling to ``RETRY_MAX``), as often as it takes: memory stays bounded by
  ``capacity + batch_size`` entries while the database is away, and entries that arrive
  meanwhile are dropped once the buffer is full. A retried batch writes nothing twice (each
  entry carries its id).
- The flusher lingers ``linger`` seconds after the first entry of a batch before writing, so
  that a busy instance commits one batch per interval instead of one per request (the entry
  shows in the activity feed that much later).
- On cancellation (shutdown), what is buffered is written once more, shielded, within
  ``final_flush_timeout``; what cannot be written then is counted in ``lost``.

Any other store error is a bug and is re-raised (STYLE.md): the owner sees it.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, NoReturn

import trio

from nursery.errors import StoreUnavailable
from nursery.ids import row_id
from nursery.stores.audit import AuditEntry, AuditStore, to_millisecond

log = logging.getLogger(__name__)

DEFAULT_CAPACITY = 10_000
DEFAULT_BATCH_SIZE = 500
DEFAULT_LINGER = 0.25  # seconds (a busy instance: a few batches a second, not one per request)
RETRY_INITIAL = 0.2  # seconds
RETRY_MAX = 10.0
FINAL_FLUSH_TIMEOUT = 1.0


class Audit:
    """The recorder (``record``) and the flusher (``run``) of one instance."""

    def __init__(
        self,
        instance: str,
        *,
        capacity: int = DEFAULT_CAPACITY,
        batch_size: int = DEFAULT_BATCH_SIZE,
        linger: float = DEFAULT_LINGER,
        final_flush_timeout: float = FINAL_FLUSH_TIMEOUT,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if capacity < 1 or batch_size < 1:
            raise ValueError("the audit buffer and batches hold at least one entry")
        self._instance = instance
        self._batch_size = batch_size
        self._linger = linger
        self._final_flush_timeout = final_flush_timeout
        self._clock = clock
        self._seq = itertools.count()
        self._send, self._receive = trio.open_memory_channel[AuditEntry](capacity)
        self.capacity = capacity
        self.recorded = 0  # accepted into the buffer
        self.dropped = 0  # refused: the buffer was full
        self.stored = 0  # written to the store
        self.lost = 0  # accepted, then given up on at shutdown

    @property
    def buffered(self) -> int:
        return self._send.statistics().current_buffer_used

    def record(
        self,
        kind: str,
        user_id: str,
        session_id: str | None,
        device: str = "",
        *,
        todo_id: str | None = None,
        done: bool | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        """Queue one entry; never blocks, never raises (a full buffer drops and counts)."""
        entry = AuditEntry(
            id=str(row_id()),
            user_id=user_id,
            kind=kind,
            at=to_millisecond(self._clock()),
            seq=next(self._seq),
            session_id=session_id,
            device=device,
            instance=self._instance,
            todo_id=todo_id,
            done=done,
            details=dict(details or {}),
        )
        try:
            self._send.send_nowait(entry)
        except trio.WouldBlock:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("audit buffer full (%d entries): %d dropped so far",
                            self.capacity, self.dropped)
        else:
            self.recorded += 1

    async def run(
        self, store: AuditStore, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Write buffered entries to ``store`` until cancelled; see the module docstring."""
        task_status.started()
        batch: list[AuditEntry] = []
        try:
            while True:
                if not batch:
                    batch.append(await self._receive.receive())
                    await trio.sleep(self._linger)
                self._take(batch, self._batch_size)
                await self._write_until_stored(store, batch)
                batch = []
        finally:
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = trio.current_time() + self._final_flush_timeout
                await self._final_flush(store, batch)

    def _take(self, batch: list[AuditEntry], up_to: int | None) -> None:
        while up_to is None or len(batch) < up_to:
            try:
                batch.append(self._receive.receive_nowait())
            except trio.WouldBlock:
                return

    async def _write_until_stored(self, store: AuditStore, batch: list[AuditEntry]) -> None:
        delay = RETRY_INITIAL
        while True:
            try:
                await store.append_audit(batch)
            except StoreUnavailable as exc:
                log.warning("audit: %d entries not written yet (%s); again in %.1f s",
                            len(batch), exc, delay)
                await trio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
            else:
                self.stored += len(batch)
                return

    async def _final_flush(self, store: AuditStore, batch: list[AuditEntry]) -> None:
        """Shielded, under a deadline: one attempt per batch for what is left."""
        self._take(batch, None)
        try:
            while batch:
                chunk = batch[: self._batch_size]
                await store.append_audit(chunk)
                self.stored += len(chunk)
                del batch[: self._batch_size]
        except StoreUnavailable:
            pass
        finally:  # also when the deadline cancels the write
            if batch:
                self.lost += len(batch)
                log.warning("audit: %d entries lost at shutdown", len(batch))
