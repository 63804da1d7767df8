"""One process the cluster supervisor owns (``_supervisor``): what it runs and its state."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

POLL = 0.05  # seconds between looks at a child's state


@dataclass(eq=False)
class Child:
    """One supervised process. ``state``: new → starting → ready, then draining (rolling
    restart) → starting, or backoff (it exited on its own) → starting, or stopping → stopped
    (the supervisor let it go for good). ``generation`` counts starts; ``crashes`` the exits
    nobody asked for."""

    name: str
    kind: str  # "postgres", "redis", "redis-node" (of a Redis Cluster), "instance", "caddy",
    # "etcd", "patroni" (a PostgreSQL node of --ha)
    argv: list[str]
    env: dict[str, str]
    host: str
    port: int
    log_path: Path
    probe: Callable[[], Any]  # async () -> str | None: a short description when healthy
    stop_signal: int = signal.SIGTERM  # asks it to stop gracefully
    restart_delay: float = 0.0  # at least this long before starting it again after a crash
    process: trio.Process | None = None
    state: str = "new"
    generation: int = 0  # how many times it was started
    crashes: int = 0
    started_at: float | None = None  # wall clock, for status
    last_exit: int | None = None
    supervised: bool = False  # a supervise task runs (or ran) for it
    stopping: bool = False
    replace: bool = False  # the next exit is a planned restart: start again at once
    wake: trio.Event = field(default_factory=trio.Event)
    finished: trio.Event = field(default_factory=trio.Event)
    info: dict[str, Any] = field(default_factory=dict)  # kind-specific: a node's role, lag

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None and self.process.returncode is None else None

    def signal(self, signum: int) -> None:
        process = self.process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signum)

    def snapshot(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "pid": self.pid, "host": self.host,
                "port": self.port, "state": self.state, "starts": self.generation,
                "crashes": self.crashes, "started_at": self.started_at,
                "last_exit": self.last_exit, "log": str(self.log_path),
                "command": " ".join(self.argv), **self.info}
