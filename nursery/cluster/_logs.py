"""The cluster's log files and the words it uses about its children."""

from __future__ import annotations

import contextlib
import signal
import time
from pathlib import Path

from nursery.logs import redact as redact  # the one rule, for the cluster's status lines

LOG_TAIL_LINES = 20


def note(log_path: Path, message: str) -> None:
    """A supervisor line in a child's log, between the child's own lines."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    with open(log_path, "a") as out:
        out.write(f"--- {stamp} supervisor: {message}\n")


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def describe_exit(code: int | None) -> str:
    if code is None:
        return "no process"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-code).name}"
    return f"exit status {code}"

