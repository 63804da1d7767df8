"""A steady load through the proxy, and what it saw: used by the cluster tests and by
bench/faults.py (one implementation of "devices and writers under a fault").

Black box: everything goes through the proxy's HTTP API and ``/ws`` as a client would; nothing
here knows how a server is built.

- ``load_through(proxy_url, ...)``: one user; ``devices`` sockets roaming through the proxy
  (``RoamingDevice``: resume with the last revision applied); ``writers`` writing every
  ``interval`` seconds (``Writer``: create/toggle/delete, retrying with the same
  Idempotency-Key). On leaving the block the writers stop, then ``settle`` compares.
- ``settle``: the server's state read back through the proxy, against what the writers were
  told (lost, duplicated, unexpected todos) and against every device's mirror (converged).
- ``window_figures``: for a fault's window, the longest time a device went without a change,
  and when service was normal again (``recovered_at``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import trio

from tests.cluster.support import RoamingDevice, Writer
from tests.harness import User, login, register
from tests.live import server_state

# A write that needed a retry or took longer than this, or a device without a change for
# longer than this (the writers write every few tens of ms), is service not yet normal.
SLOW = 1.0
SETTLE_TIMEOUT = 30.0  # for every device to reach the server's revision at the end


@dataclass
class Load:
    user: User
    devices: list[RoamingDevice]
    writers: list[Writer]
    client: httpx.AsyncClient
    proxy_url: str
    outcome: Outcome | None = None  # set when the block ends


@dataclass
class Outcome:
    """What the writers and devices saw, checked against the server's state at the end."""

    attempted: int
    succeeded: int
    failed: int
    retried: int
    duplicates: int  # extra copies of a todo: a retried create applied twice
    lost: int  # acknowledged writes the server does not show
    unexpected: int  # todos nobody was told about (a create reported failed, applied anyway)
    converged: bool  # every device's mirror is the server's state, at its revision
    problems: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return (self.failed == self.duplicates == self.lost == self.unexpected == 0
                and self.converged)


@asynccontextmanager
async def load_through(
    proxy_url: str, *, devices: int = 4, writers: int = 2, interval: float = 0.04,
    client: httpx.AsyncClient | None = None,
) -> AsyncIterator[Load]:
    """Devices connected and writers writing through ``proxy_url`` for the body of the block;
    then the writers stop and ``load.outcome`` is filled in (``settle``)."""
    async with (httpx.AsyncClient() if client is None else _borrowed(client)) as http, \
            trio.open_nursery() as nursery:
        user = await register(http, proxy_url, "device-0")
        tokens = [user.token] + [
            (await login(http, proxy_url, user, f"device-{i}")).token for i in range(1, devices)
        ]
        roaming = [RoamingDevice(token) for token in tokens]
        ws_url = proxy_url.replace("http://", "ws://") + "/ws"
        for device in roaming:
            await nursery.start(device.roam, ws_url)
        load = Load(user, roaming,
                    [Writer(http, proxy_url, user.headers, name=f"w{i}") for i in range(writers)],
                    http, proxy_url)
        stop = trio.Event()
        async with trio.open_nursery() as writing:
            for writer in load.writers:
                writing.start_soon(writer.run, stop, interval)
            yield load
            stop.set()
        load.outcome = await settle(load)
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def _borrowed(client: httpx.AsyncClient) -> AsyncIterator[httpx.AsyncClient]:
    yield client


async def settle(load: Load) -> Outcome:
    """Compare the server's state with the writers' model and every device's mirror."""
    problems: list[str] = []
    state, rev = await _read_state(load)
    titles = Counter(t["title"] for t in state.values())
    model = {todo_id: m for w in load.writers for todo_id, m in w.model.items()}
    deleted = {todo_id for w in load.writers for todo_id in w.deleted}
    lost = [i for i, m in model.items() if i not in state or state[i]["done"] != m["done"]]
    lost += [i for i in deleted if i in state]
    unexpected = [i for i in state if i not in model and i not in deleted]
    duplicates = sum(n - 1 for n in titles.values())
    if lost:
        problems.append(f"{len(lost)} acknowledged write(s) not on the server, e.g. {lost[0]}")
    if unexpected:
        problems.append(f"{len(unexpected)} todo(s) nobody was told about, e.g. "
                        f"{state[unexpected[0]]['title']!r}")
    converged = True
    for n, device in enumerate(load.devices):
        if device.broken is None:
            with trio.move_on_after(SETTLE_TIMEOUT):
                while device.rev < rev and device.broken is None:
                    await trio.sleep(0.02)
        if device.broken is not None or device.rev != rev or device.todos != state:
            converged = False
            problems.append(f"device {n}: " + (device.broken or f"at rev {device.rev} of {rev}, "
                            f"{len(device.todos)} todos of {len(state)}"))
    for writer in load.writers:
        problems += writer.failures
    return Outcome(
        attempted=sum(w.operations for w in load.writers),
        succeeded=sum(w.operations - w.failed for w in load.writers),
        failed=sum(w.failed for w in load.writers),
        retried=sum(w.retried_operations for w in load.writers),
        duplicates=duplicates, lost=len(lost), unexpected=len(unexpected),
        converged=converged, problems=problems,
    )


async def _read_state(load: Load) -> tuple[dict[str, dict[str, Any]], int]:
    """The server's state, read like a client would: retried while the proxy answers 5xx."""
    with trio.fail_after(SETTLE_TIMEOUT):
        while True:
            try:
                return await server_state(load.client, load.proxy_url, load.user.headers)
            except (AssertionError, httpx.TransportError):
                await trio.sleep(0.2)


def window_figures(load: Load, start: float, back: float, end: float) -> dict[str, Any]:
    """Figures of a fault injected at ``start``, the component back at ``back``, the load
    observed until ``end`` (trio times):

    - ``longest_device_gap_s``: the longest time any device went without a change in
      [start, end];
    - ``recovered_s``: from ``start`` until service was normal again: the end of the last
      write after ``start`` that needed a retry or took over ``SLOW``, or of the last device
      gap over ``SLOW``, whichever is later (0 when nothing was disturbed);
    - ``fault_s``: from ``start`` until the component was back."""
    recovered = start
    for writer in load.writers:
        for began, ended, attempts in writer.operation_spans:
            if ended >= start and (attempts > 1 or ended - began > SLOW):
                recovered = max(recovered, ended)
    for device in load.devices:
        times = sorted(t for t in device.received_at.values() if t >= start)
        previous = start
        for t in [*times, end]:
            if t - previous > SLOW:
                recovered = max(recovered, t)
            previous = t
    return {
        "longest_device_gap_s": round(max(d.longest_gap(start, end) for d in load.devices), 2),
        "recovered_s": round(recovered - start, 2),
        "fault_s": round(back - start, 2),
    }
