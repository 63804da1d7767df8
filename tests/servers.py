"""Real servers for the test suite, started and stopped synchronously (subprocess) so that
session-scoped pytest fixtures can own them (pytest-trio's async fixtures are per-test).

- ``scratch_dir()``: a temporary directory, on RAM (/dev/shm) when there is room: creating a
  database there takes ~40 ms instead of ~350 ms on this machine's disk.
- ``RedisServer``: a private ``redis-server`` (no persistence) on a fixed port that can be
  stopped and started again on the same port, for fault tests.
- PostgreSQL: ``nursery.stores.embedded.PrivatePostgres`` (the same code ``nursery serve``
  uses), re-exported here with ``new_database()``.

Whoever calls ``start()`` owns the process and calls ``stop()``; the fixtures in conftest.py do
it at teardown. Every wait is bounded; a server that does not come up raises
``ServerFailed`` carrying its log tail.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from nursery.stores.embedded import PrivatePostgres, free_port

__all__ = ["PrivatePostgres", "RedisServer", "ServerFailed", "free_port", "new_database",
           "scratch_dir"]

RAM_DIR = Path("/dev/shm")
RAM_DIR_MIN_FREE = 2 * 1024**3  # a cluster is ~40 MB, each database ~8 MB
LOG_TAIL_LINES = 25


class ServerFailed(RuntimeError):
    """A test server did not start or stop in time."""


def scratch_dir(prefix: str) -> Path:
    """A new empty temporary directory; the caller removes it (``shutil.rmtree``)."""
    parent: Path | None = None
    if RAM_DIR.is_dir() and os.access(RAM_DIR, os.W_OK):
        if shutil.disk_usage(RAM_DIR).free >= RAM_DIR_MIN_FREE:
            parent = RAM_DIR
    return Path(tempfile.mkdtemp(prefix=prefix, dir=parent))


def new_database(server: PrivatePostgres) -> str:
    """Create a uniquely named empty database on ``server``; return its URL."""
    return server.create_database(f"test_{uuid.uuid4().hex}")


class RedisServer:
    """``redis-server`` on ``127.0.0.1:port`` with its files in ``directory``; no snapshots,
    no AOF. ``port`` is fixed at construction so a restart keeps the URL."""

    def __init__(self, directory: Path, *, port: int | None = None) -> None:
        self.directory = directory
        self.port = port if port is not None else free_port()
        self.log_path = directory / "redis.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 10.0) -> str:
        """Start the server (no-op if running) and wait until it answers PING; return URL."""
        if self.running:
            return self.url
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", str(self.directory),
                "--logfile", str(self.log_path), "--daemonize", "no"]
        try:
            self._process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, start_new_session=True,  # no terminal ^C
            )
        except OSError as exc:
            raise ServerFailed(f"cannot run redis-server: {exc}") from exc
        deadline = time.monotonic() + timeout
        while not self.ping():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise ServerFailed(f"redis-server on port {self.port} did not answer PING "
                                   f"within {timeout}s; {self.log_path} ends:\n{self._log_tail()}")
            time.sleep(0.01)
        return self.url

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (SIGKILL after ``timeout``) and wait for exit; no-op if not running."""
        self._signal(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL, as in a crash, and wait for exit."""
        self._signal(signal.SIGKILL, 5.0)

    def _signal(self, signum: int, timeout: float) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signum)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5.0)

    def ping(self, timeout: float = 1.0) -> bool:
        try:
            return self.command("PING", timeout=timeout) == b"+PONG"
        except OSError:
            return False

    def flushall(self) -> None:
        reply = self.command("FLUSHALL")
        if reply != b"+OK":
            raise ServerFailed(f"FLUSHALL on port {self.port} answered {reply!r}")

    def command(self, *args: str, timeout: float = 5.0) -> bytes:
        """Send one command; return the first line of the reply (enough for status replies).
        Raises OSError when the server cannot be reached."""
        request = f"*{len(args)}\r\n".encode()
        for arg in args:
            data = arg.encode()
            request += b"$%d\r\n%s\r\n" % (len(data), data)
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
            sock.sendall(request)
            reply = b""
            while not reply.endswith(b"\r\n"):
                chunk = sock.recv(4096)
                if not chunk:
                    raise ConnectionResetError("redis closed the connection")
                reply += chunk
        return reply.split(b"\r\n", 1)[0]

    def _log_tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-LOG_TAIL_LINES:])
