"""The cluster directory as the commands share it: the state file, the supervisor's lock,
the shared secret, and the processes a state file names.

Everything written here is private to the owner (0600), atomically (write, then rename): the
state file may hold a database URL with a password.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nursery.cluster._config import LOCK_FILE, SECRET_FILE, STATE_FILE, ClusterError


def read_state(directory: Path) -> dict[str, Any] | None:
    try:
        state = json.loads((directory / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


@contextlib.contextmanager
def supervisor_lock(directory: Path) -> Iterator[None]:
    """Held for the supervisor's lifetime: one supervisor per directory. The kernel releases
    it when the process dies, so ``status``/``down`` can tell a live supervisor from a stale
    state file (children do not inherit it: subprocesses close inherited fds)."""
    with open(directory / LOCK_FILE, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ClusterError(f"a cluster supervisor is already running in {directory} "
                               f"(stop it with: nursery cluster down --dir {directory})") from None
        yield


def supervisor_running(directory: Path) -> bool:
    try:
        with open(directory / LOCK_FILE, "a+") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            return False
    except FileNotFoundError:
        return False


def cluster_secret(directory: Path) -> str:
    path = directory / SECRET_FILE
    if not path.exists():
        write_private(path, secrets.token_urlsafe(48))
    return path.read_text().strip()


def write_private(path: Path, text: str) -> None:
    """Write ``text`` atomically to ``path``, readable by the owner only."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(tmp, path)


def live_pids(state: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(name, pid, signal to stop it) for the processes of ``state`` still alive and still
    running the command recorded (a recycled pid is left alone)."""
    found: list[tuple[str, int, int]] = []
    for proc in state.get("processes", []):
        pid = proc.get("pid")
        if pid and alive(pid) and _same_command(proc, cmdline(pid)):
            # SIGINT is PostgreSQL's fast shutdown (SIGTERM would wait for every client).
            found.append((proc["name"], pid, signal.SIGINT if proc["kind"] == "postgres" else signal.SIGTERM))
    return found


def _same_command(proc: dict[str, Any], running: str) -> bool:
    # redis-server rewrites its title to "redis-server HOST:PORT" (plus " [cluster]")
    if proc["kind"] in ("redis", "redis-node"):
        return running.startswith("redis-server") and f":{proc['port']}" in running
    running = running.strip()
    # PostgreSQL is started through setpriv (as the postgres user), which execs it: the
    # command recorded ends with the one running.
    return bool(running) and str(proc.get("command", "")).endswith(running)


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
