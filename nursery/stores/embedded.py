"""A private PostgreSQL server living in a data directory: the embedded default of
``nursery serve`` (no ``NURSERY_DATABASE_URL``) and the database of the test fixtures.

Two entry points, one implementation:

- ``PrivatePostgres`` (sync, subprocess): ``start()`` runs initdb on first use, then
  ``pg_ctl start``; ``stop()`` runs ``pg_ctl stop -m fast``. Used by sync pytest fixtures.
- ``open_private_postgres`` (trio): runs the same ``start``/``stop`` in ``trio.to_thread``
  (they only wait on subprocesses, each bounded by a timeout).
- A supervisor that runs the server itself (``nursery cluster``, which restarts it when it
  dies) calls ``prepare()`` (initdb on first use; the ``postgres`` command line to run in the
  foreground), starts that command, and once it answers calls ``create_database_if_missing()``.
  Stopping it is then the supervisor's job (SIGINT: PostgreSQL's fast shutdown).

Resource handling: the server is a daemon launched by ``pg_ctl``; whoever called ``start()``
owns it and must call ``stop()`` (the context manager does, shielded, also on cancellation).
``stop()`` only stops a server this object launched, so a failed start never stops somebody
else's server on the same data dir. A server already running on the data dir (another
``nursery serve``, or an orphan of a killed one) is refused with the command that stops it.

Layout: ``DATA_DIR/pg`` is the cluster (initdb ``-A trust -U nursery``, UTF8, C locale), with
its log in ``DATA_DIR/pg/server.log`` and its unix socket in ``DATA_DIR/pg``. The server
listens on 127.0.0.1 only; trust authentication means any local user may connect, which is
right for a dev/test server and wrong for anything shared.

Running as root: PostgreSQL refuses to, so initdb/pg_ctl run as the ``postgres`` user (else
``nobody``) through ``setpriv``; the cluster directory is chowned to that user and the data dir
itself gets the search bit (x, never r) for that user's permission class. Nothing above the
data dir changes mode: when a parent is closed to that user (``/root``, 0700) the start is
refused with the directory to blame and a data dir to use instead (``/var/tmp/nursery``).

Error handling: every failure to find binaries, initialise or start raises
``StoreUnavailable`` with the reason and the tail of the server log.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Literal

import trio

from nursery.errors import StoreUnavailable
from nursery.stores._pg_host import HOST, _ServerUser, find_pg_bin_dir, free_port

__all__ = ["PrivatePostgres", "find_pg_bin_dir", "free_port", "open_private_postgres"]

log = logging.getLogger(__name__)

SUPERUSER = "nursery"
DATABASE = "nursery"
LOG_TAIL_LINES = 25
# sockaddr_un.sun_path is 108 bytes including the NUL; the socket is DIR/.s.PGSQL.<port>.
MAX_SOCKET_PATH = 107

StopMode = Literal["smart", "fast", "immediate"]


class PrivatePostgres:
    """A PostgreSQL cluster in ``data_dir/'pg'``, served on ``127.0.0.1:port``.

    ``port`` is fixed at construction (``None``: a free one), so ``stop()`` then ``start()``
    serves the same URL again. ``fast=True`` turns off fsync, synchronous_commit and
    full_page_writes (and initdb's sync): for tests, where a crash may lose data. ``timeout``
    bounds the whole of ``start()``.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        fast: bool = False,
        timeout: float = 30.0,
        max_connections: int = 100,
    ) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.pg_dir = self.data_dir / "pg"
        self.log_path = self.pg_dir / "server.log"
        self.port = port if port is not None else free_port()
        self.fast = fast
        self.timeout = timeout
        self.max_connections = max_connections
        self._user = _ServerUser.for_root()
        self._bin_dir: Path | None = None
        self._launched = False  # we ran `pg_ctl start`; stop() acts only then

    @property
    def url(self) -> str:
        """The URL of the ``nursery`` database."""
        return self.url_for(DATABASE)

    def url_for(self, database: str) -> str:
        return f"postgresql://{SUPERUSER}@{HOST}:{self.port}/{database}"

    @property
    def bin_dir(self) -> Path:
        if self._bin_dir is None:
            self._bin_dir = find_pg_bin_dir()
        return self._bin_dir

    @property
    def running(self) -> bool:
        """Whether this object launched the server and has not stopped it yet."""
        return self._launched

    def start(self) -> str:
        """Initialise the cluster if new, start the server, create the ``nursery`` database if
        missing; return its URL. Idempotent while running. Raises ``StoreUnavailable``."""
        if self._launched:
            return self.url
        deadline = time.monotonic() + self.timeout
        self._initialise(deadline)
        self._launch(deadline)
        try:
            self.create_database_if_missing(timeout=_remaining(deadline))
        except BaseException:
            self.stop(mode="immediate")
            raise
        return self.url

    def prepare(self) -> list[str]:
        """For a caller that runs the server itself: initialise the cluster if new (refusing
        one already served), and return the command that serves it in the foreground, as the
        server user when we are root. The caller owns that process; once it accepts
        connections, call ``create_database_if_missing``. Raises ``StoreUnavailable``."""
        self._initialise(time.monotonic() + self.timeout)
        return self._as_user([str(self.bin_dir / "postgres"), "-D", str(self.pg_dir),
                              *self._server_options()])

    def create_database_if_missing(self, *, timeout: float = 10.0) -> None:
        """Create the ``nursery`` database on the running server unless it exists."""
        self.execute(
            f"SELECT 'CREATE DATABASE {DATABASE}' WHERE NOT EXISTS"
            f" (SELECT FROM pg_database WHERE datname = '{DATABASE}')\n\\gexec\n",
            timeout=timeout,
        )

    def stop(self, *, mode: StopMode = "fast", timeout: float = 15.0) -> None:
        """Stop the server if this object launched it (no-op otherwise) and wait for it to
        exit: ``pg_ctl stop -m mode``, escalating to ``immediate`` and then SIGKILL if it does
        not stop within ``timeout``. Never raises for a server that is already gone."""
        if not self._launched:
            return
        try:
            for attempt, wait in ((mode, max(1, math.ceil(timeout))), ("immediate", 5)):
                if not self._pid_alive():
                    return
                result = self._run_pg_ctl(["stop", "-m", attempt, "-w", "-t", str(wait)],
                                          timeout=wait + 5)
                if result is not None and result.returncode == 0:
                    return
                log.warning("pg_ctl stop -m %s failed for %s: %s", attempt, self.pg_dir,
                            result.stderr.strip() if result else "timed out")
            self._kill_postmaster()
        finally:
            self._launched = False

    def execute(self, sql: str, *, database: str = "postgres", timeout: float = 10.0) -> str:
        """Run ``sql`` (several statements allowed, each in autocommit) with psql as the
        superuser; return psql's unaligned output. Raises ``StoreUnavailable`` on failure."""
        argv = [self._psql(), "-X", "-q", "-tA", "-v", "ON_ERROR_STOP=1", "-h", HOST,
                "-p", str(self.port), "-U", SUPERUSER, "-d", database, "-f", "-"]
        result = self._run(argv, timeout=timeout, input=sql, as_server_user=False)
        if result.returncode != 0:
            raise StoreUnavailable(f"psql on {self.url_for(database)} failed: "
                                   f"{result.stderr.strip()}")
        return result.stdout

    def create_database(self, name: str, *, timeout: float = 10.0) -> str:
        """Create an empty database ``name`` (letters, digits, _); return its URL."""
        _check_identifier(name)
        self.execute(f"CREATE DATABASE {name}", timeout=timeout)
        return self.url_for(name)

    def drop_database(self, name: str, *, timeout: float = 10.0) -> None:
        """Drop ``name`` if it exists, disconnecting its clients."""
        _check_identifier(name)
        self.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", timeout=timeout)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no server log)"
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> PrivatePostgres:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- steps of start() -----------------------------------------------------------------

    def _initialise(self, deadline: float) -> None:
        _ = self.bin_dir  # fail on missing binaries before touching any directory
        self._prepare_dirs()
        if (self.pg_dir / "PG_VERSION").is_file():
            self._check_reusable(deadline)
        else:
            self._initdb(deadline)

    def _prepare_dirs(self) -> None:
        if self._user is not None:  # checked before anything is made
            self._user.check_reachable(
                self.data_dir, remedy="use a data dir it can reach, e.g. --data-dir "
                                      "/var/tmp/nursery (NURSERY_DATA_DIR), or run as another user")
            self._user.check_reachable(
                self.bin_dir / "postgres", remedy="install Debian's postgresql package or set "
                                                  "NURSERY_PG_BIN to binaries it can reach")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.pg_dir.mkdir(mode=0o700, exist_ok=True)
        if self._user is None:
            return
        self._user.grant_search_on(self.data_dir)
        if self.pg_dir.stat().st_uid != self._user.uid:
            self._user.chown_tree(self.pg_dir)

    def _initdb(self, deadline: float) -> None:
        argv = [str(self.bin_dir / "initdb"), "-D", str(self.pg_dir), "-A", "trust",
                "-U", SUPERUSER, "--encoding=UTF8", "--locale=C", "--no-instructions"]
        if self.fast:
            argv.append("--no-sync")
        result = self._run(argv, timeout=_remaining(deadline))
        if result.returncode != 0:
            raise StoreUnavailable(f"initdb of {self.pg_dir} failed: "
                                   f"{_tail(result.stderr or result.stdout)}")

    def _check_reusable(self, deadline: float) -> None:
        """Refuse a cluster of another major version, or one already served by a process."""
        cluster = (self.pg_dir / "PG_VERSION").read_text().strip()
        version = self._run([str(self.bin_dir / "postgres"), "-V"],
                            timeout=_remaining(deadline), as_server_user=False).stdout
        match = re.search(r"\(PostgreSQL\) (\d+)", version)
        if match and match.group(1) != cluster:
            raise StoreUnavailable(
                f"{self.pg_dir} holds a PostgreSQL {cluster} cluster but {self.bin_dir} is "
                f"PostgreSQL {match.group(1)}: set NURSERY_PG_BIN to version {cluster}'s "
                f"binaries, or move the data dir away to start afresh")
        self._await_reaped(deadline)
        status = self._run_pg_ctl(["status"], timeout=_remaining(deadline))
        if status is not None and status.returncode == 0:
            stop = self._as_user([str(self.bin_dir / "pg_ctl"), "-D", str(self.pg_dir), "stop"])
            raise StoreUnavailable(
                f"a PostgreSQL server is already running on {self.pg_dir} (another nursery "
                f"using this data dir, or left over by a killed one); stop it with: "
                f"{shlex.join(stop)}")

    def _server_options(self) -> list[str]:
        options = ["-c", f"listen_addresses={HOST}", "-p", str(self.port),
                   "-c", f"unix_socket_directories={self._socket_dir()}",
                   "-c", f"max_connections={self.max_connections}"]
        if self.fast:
            options += ["-c", "fsync=off", "-c", "synchronous_commit=off",
                        "-c", "full_page_writes=off"]
        return options

    def _launch(self, deadline: float) -> None:
        options = self._server_options()
        wait = max(1, math.floor(_remaining(deadline)))
        self._launched = True  # from here a half-started server may exist: stop() must act
        result = self._run_pg_ctl(
            # pg_ctl hands -o to /bin/sh, hence shlex.
            ["start", "-w", "-t", str(wait), "-l", str(self.log_path), "-o", shlex.join(options)],
            timeout=wait + 2,
        )
        if result is None or result.returncode != 0:
            reason = ("timed out" if result is None
                      else " ".join((result.stderr or result.stdout).split()))
            tail = self.log_tail()
            self.stop(mode="immediate")
            raise StoreUnavailable(
                f"PostgreSQL in {self.pg_dir} did not start on {HOST}:{self.port} ({reason}); "
                f"server log {self.log_path} ends:\n{tail}")
        log.info("private PostgreSQL serving %s from %s", self.url, self.pg_dir)

    def _socket_dir(self) -> str:
        # An over-long socket path makes the server fail; TCP alone is enough for us.
        if len(str(self.pg_dir)) + len("/.s.PGSQL.65535") > MAX_SOCKET_PATH:
            return ""
        return str(self.pg_dir)

    # -- processes ---------------------------------------------------------------------------

    def _pid_alive(self) -> bool:
        pid = self._postmaster_pid()
        return pid is not None and _process_state(pid) == "alive"

    def _await_reaped(self, deadline: float) -> None:
        """Wait while a dead postmaster is still a zombie: PostgreSQL and pg_ctl take a zombie's
        pid for a live server. (This container's PID 1 reaps orphans only about once a second.)
        """
        pid = self._postmaster_pid()
        while pid is not None and _process_state(pid) == "zombie":
            _remaining(deadline)
            time.sleep(0.05)

    def _postmaster_pid(self) -> int | None:
        try:
            first = (self.pg_dir / "postmaster.pid").read_text().split("\n", 1)[0]
            return int(first)
        except (OSError, ValueError):
            return None

    def _kill_postmaster(self) -> None:
        pid = self._postmaster_pid()
        if pid is None:
            return
        log.warning("killing PostgreSQL postmaster %d of %s", pid, self.pg_dir)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 5
        while self._pid_alive() and time.monotonic() < deadline:
            time.sleep(0.05)

    def _psql(self) -> str:
        bundled = self.bin_dir / "psql"
        found = str(bundled) if bundled.is_file() else shutil.which("psql")
        if found is None:
            raise StoreUnavailable(f"no psql in {self.bin_dir} nor on PATH")
        return found

    def _run_pg_ctl(self, args: list[str], *, timeout: float
                    ) -> subprocess.CompletedProcess[str] | None:
        """pg_ctl ARGS on this cluster; None if it did not finish within ``timeout``."""
        argv = [str(self.bin_dir / "pg_ctl"), "-D", str(self.pg_dir), *args]
        try:
            return self._run(argv, timeout=timeout, raise_timeout=True)
        except subprocess.TimeoutExpired:
            return None

    def _as_user(self, argv: list[str]) -> list[str]:
        return argv if self._user is None else [*self._user.prefix(), *argv]

    def _run(self, argv: list[str], *, timeout: float, input: str | None = None,
             as_server_user: bool = True, raise_timeout: bool = False
             ) -> subprocess.CompletedProcess[str]:
        if as_server_user:
            argv = self._as_user(argv)
        try:
            return subprocess.run(
                argv, input=input, stdin=None if input is not None else subprocess.DEVNULL,
                capture_output=True, text=True, timeout=timeout, env=_clean_env(), cwd="/",
            )
        except subprocess.TimeoutExpired:
            if raise_timeout:
                raise
            raise StoreUnavailable(f"{Path(argv[0]).name} took longer than {timeout:.1f}s: "
                                   f"{shlex.join(argv)}") from None
        except OSError as exc:
            raise StoreUnavailable(f"cannot run {argv[0]}: {exc}") from exc


def _process_state(pid: int) -> Literal["alive", "zombie", "gone"]:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"
    except (OSError, IndexError):
        return "alive"  # no /proc to ask: assume the worst, pg_ctl decides
    return "zombie" if state == "Z" else "alive"


def _clean_env() -> dict[str, str]:
    # PGHOST, PGDATA, PGOPTIONS... of the caller must not redirect our commands.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_MESSAGES"] = "C"  # errors we show in messages stay greppable
    return env


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise StoreUnavailable("private PostgreSQL did not start in time")
    return left


def _tail(text: str, lines: int = LOG_TAIL_LINES) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _check_identifier(name: str) -> None:
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
        raise ValueError(f"not a plain database name: {name!r}")


@asynccontextmanager
async def open_private_postgres(
    data_dir: Path, *, port: int | None = None, timeout: float = 30, fast: bool = False
) -> AsyncIterator[str]:
    """Start (initdb on first use) a PostgreSQL server whose data lives in ``data_dir/'pg'``,
    listening on 127.0.0.1:``port`` (None: a free port); yield the URL of its ``nursery``
    database (created if missing).

    Resource handling: on exit, also by cancellation or error, the server is stopped with
    ``pg_ctl stop -m fast`` in a shielded scope and waited for (bounded: see
    ``PrivatePostgres.stop``). Cancellation during start waits for start to finish or time
    out (at most ``timeout``), then stops the server. Start failures raise
    ``StoreUnavailable`` with the server log's tail.
    """
    server = PrivatePostgres(data_dir, port=port, fast=fast, timeout=timeout)
    try:
        # Blocking subprocess waits, each bounded; a thread keeps the trio loop free.
        yield await trio.to_thread.run_sync(server.start)
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(server.stop)
