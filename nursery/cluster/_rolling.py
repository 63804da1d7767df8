"""Rolling restart, one instance at a time: SIGTERM it (it drains: /readyz 503 for
``drain_delay``, longer than Caddy's health check interval, so Caddy stops sending it requests
before its listener closes; its websockets get 1012 and reconnect through Caddy to the
others), wait for it to exit, start it again on the same port, wait for its /readyz, then
until Caddy routes requests to it (GET /readyz through Caddy names the instance that answered;
round robin reaches it within a few tries once Caddy's health check has passed). Only then
the next one. A step that does not finish within ``ready_timeout`` stops the roll (the other
instances are left alone) and the roll is reported failed.
"""

from __future__ import annotations

import logging
import signal
import time
from typing import TYPE_CHECKING

import trio

from nursery.cluster._child import POLL, Child
from nursery.cluster._config import ClusterError
from nursery.cluster._probes import until_proxy_reaches

if TYPE_CHECKING:
    from nursery.cluster._supervisor import Supervisor

log = logging.getLogger("nursery.cluster")


async def roll_when_asked(supervisor: Supervisor) -> None:
    while not supervisor.stop_requested.is_set():
        await supervisor.roll_wanted.wait()
        supervisor.roll_wanted = trio.Event()  # a SIGHUP during this roll asks for another one
        await rolling_restart(supervisor)

async def rolling_restart(supervisor: Supervisor) -> None:
    roll_id = supervisor.roll["id"] + 1
    began = trio.current_time()
    supervisor.roll = {"id": roll_id, "state": "running", "current": None, "done": [],
                 "started_at": time.time(), "finished_at": None, "error": None}
    supervisor.write_state()
    log.info("rolling restart #%d of %d instances", roll_id, len(supervisor.instances))
    if len(supervisor.instances) < 2:
        log.warning("with one instance, requests fail while it restarts (Caddy retries "
                    "for lb_try_duration only)")
    try:
        for child in supervisor.instances:
            if supervisor.stop_requested.is_set():
                raise ClusterError("the cluster is stopping")
            supervisor.roll["current"] = child.name
            supervisor.write_state()
            await restart_one(supervisor, child)
            supervisor.roll["done"].append(child.name)
    except ClusterError as exc:
        log.error("rolling restart #%d stopped: %s", roll_id, exc.message)
        supervisor.roll.update(state="failed", error=exc.message)
    else:
        log.info("rolling restart #%d done in %.1f s", roll_id, trio.current_time() - began)
        supervisor.roll.update(state="done", current=None)
    supervisor.roll["finished_at"] = time.time()
    supervisor.write_state()

async def restart_one(supervisor: Supervisor, child: Child) -> None:
    """SIGTERM ``child``, wait for its replacement to be ready and routed to by Caddy."""
    config = supervisor.config
    old_generation, old_pid = child.generation, child.pid
    child.replace = True
    child.wake.set()  # if it was waiting in backoff
    if old_pid is not None:
        supervisor.set_state(child, "draining")
        child.signal(signal.SIGTERM)
        log.info("%s (pid %d): SIGTERM, draining for %.1f s", child.name, old_pid,
                 config.effective_drain_delay)
    with trio.move_on_after(config.shutdown_timeout + 5) as waited:
        while child.generation == old_generation:
            await trio.sleep(POLL)
    if waited.cancelled_caught:
        log.warning("%s did not stop in time: killing it", child.name)
        child.signal(signal.SIGKILL)
    with trio.move_on_after(config.ready_timeout) as waited:
        while not (child.generation > old_generation and child.state == "ready"):
            await trio.sleep(POLL)
        log.info("%s ready again (pid %s); waiting until Caddy routes to it", child.name, child.pid)
        await until_proxy_reaches(*supervisor.proxy_probe_address, child.name, tls=supervisor.proxy_tls)
    if waited.cancelled_caught:
        raise ClusterError(f"{child.name} was not back in Caddy's rotation within "
                           f"{config.ready_timeout:.0f} s; see {child.log_path}")
    log.info("%s back in rotation", child.name)
