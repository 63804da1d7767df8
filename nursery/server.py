"""One instance's lifetime: trio → listening socket → database → services → the edge.

Graceful shutdown, all under ``shutdown_timeout`` (``NURSERY_SHUTDOWN_TIMEOUT``; the delay is
``NURSERY_DRAIN_DELAY``; README.md, "Running the cluster"):
  request → /readyz answers 503 → ``drain_delay`` (the load balancer notices) → stop accepting
  → every websocket closed with 1012 → in-flight requests finish → background tasks and pools
  close. A second request (second SIGTERM) or the deadline cancels what is left.
"""

from __future__ import annotations

import logging
import secrets
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from nursery import logs
from nursery.app import Services, create_edge, open_services, run_background
from nursery.config import Settings
from nursery.edge import Edge
from nursery.ports import listen
from nursery.protocol.close_codes import RESTARTING
from nursery.stores.embedded import open_private_postgres

log = logging.getLogger(__name__)

# After the listener closes: time for requests already being read to begin being answered.
IDLE_CHECK_DELAY = 0.05


class Lifecycle:
    """How the outside (signals, tests) asks an instance to stop."""

    def __init__(self) -> None:
        self.stop_requested = trio.Event()
        self.stop_now = trio.Event()
        self.http = trio.CancelScope()  # cancelled once nothing is in flight any more

    def request_stop(self) -> None:
        """First call: graceful shutdown. Second call: cancel what is left."""
        if self.stop_requested.is_set():
            self.stop_now.set()
        self.stop_requested.set()


def resolve_secret(settings: Settings) -> str:
    """The configured key; for the embedded default, one generated once and kept."""
    if settings.secret_key:
        return settings.secret_key
    if settings.database_url:
        raise SystemExit(
            "nursery: NURSERY_SECRET_KEY is required with NURSERY_DATABASE_URL"
            " (every instance must sign tokens with the same key)"
        )
    path = Path(settings.data_dir) / "secret_key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(48))
    return path.read_text().strip()


@asynccontextmanager
async def _closing(sock: socket.socket) -> AsyncIterator[None]:
    try:
        yield
    finally:
        sock.close()


@asynccontextmanager
async def open_database(settings: Settings) -> AsyncIterator[str]:
    if settings.database_url:
        yield settings.database_url
        return
    async with open_private_postgres(Path(settings.data_dir).resolve()) as url:
        yield url


async def serve(
    settings: Settings,
    lifecycle: Lifecycle,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run one instance until ``lifecycle`` asks it to stop; ``task_status.started`` with the
    bound addresses once it accepts requests. Raises ``NurseryError`` if startup fails."""
    logs.tag_records()
    listener = listen(settings.host, settings.port)  # first: the embedded database takes seconds
    secret_key = resolve_secret(settings)
    async with (
        _closing(listener),
        open_database(settings) as database_url,
        open_services(settings, database_url, secret_key) as services,
        trio.open_nursery() as nursery,
    ):
        await nursery.start(run_background, services)
        edge = create_edge(services)
        binds = await nursery.start(_serve_edge, edge, listener, lifecycle, nursery.cancel_scope)
        nursery.start_soon(_shut_down_when_asked, services, edge, lifecycle, nursery.cancel_scope)
        log.info("instance %s ready on %s", settings.name, ", ".join(binds))
        task_status.started(binds)


async def _serve_edge(
    edge: Edge,
    listener: socket.socket,
    lifecycle: Lifecycle,
    owner: trio.CancelScope,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    with lifecycle.http:
        await edge.serve(listener, task_status=task_status)
    owner.cancel()  # serving is done: the background tasks go too


async def _shut_down_when_asked(
    services: Services, edge: Edge, lifecycle: Lifecycle, owner: trio.CancelScope
) -> None:
    await lifecycle.stop_requested.wait()
    settings = services.settings
    owner.deadline = trio.current_time() + settings.shutdown_timeout
    services.draining = True
    log.info("draining: /readyz answers 503 for %.1f s before the listener closes", settings.drain_delay)
    with trio.move_on_after(settings.drain_delay):
        await lifecycle.stop_now.wait()
    edge.stop_accepting()
    services.hub.close_all(RESTARTING, "server restarting")
    async with trio.open_nursery() as waiting:

        async def stop_at_once() -> None:
            await lifecycle.stop_now.wait()
            log.warning("stopping at once: a second stop request")
            owner.cancel()

        waiting.start_soon(stop_at_once)
        # Requests in flight finish and websockets close (1012); then the idle keep-alive
        # connections are closed.
        await trio.sleep(IDLE_CHECK_DELAY)
        await edge.wait_idle()
        log.info("nothing in flight: closing the remaining idle connections")
        lifecycle.http.cancel()
        waiting.cancel_scope.cancel()
