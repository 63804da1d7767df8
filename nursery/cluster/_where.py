"""Which cluster directory a command means, so that ``status``, ``restart`` and ``down`` need no
``--dir`` after ``up --dir``: the flag, else ``NURSERY_CLUSTER_DIR``, else the directory the last
``up`` on this account ran in (remembered in ``$XDG_STATE_HOME/nursery/last-cluster``, by
default ``~/.local/state/nursery/last-cluster``), else ``.nursery/cluster``."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path

from nursery.cluster._config import DEFAULT_DIR

ENV_VAR = "NURSERY_CLUSTER_DIR"


def remembered_file(environ: Mapping[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    home = Path(environ.get("HOME") or Path.home())
    return Path(environ.get("XDG_STATE_HOME") or home / ".local" / "state") / "nursery" / "last-cluster"


def remember(directory: Path, environ: Mapping[str, str] | None = None) -> None:
    """Note ``directory`` as the last one ``up`` ran in (best effort: a read-only home only
    means the next command needs ``--dir``)."""
    path = remembered_file(environ)
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(f"{directory.resolve()}\n")
        tmp.replace(path)


def remembered(environ: Mapping[str, str] | None = None) -> Path | None:
    try:
        text = remembered_file(environ).read_text().strip()
    except OSError:
        return None
    return Path(text) if text else None


def cluster_dir(
    given: Path | None, *, for_up: bool, environ: Mapping[str, str] | None = None
) -> tuple[Path, str]:
    """The directory to use and where it came from (for messages). ``up`` does not follow the
    remembered directory: it starts where it is told, or in the default."""
    environ = os.environ if environ is None else environ
    if given is not None:
        return given.resolve(), "--dir"
    if environ.get(ENV_VAR):
        return Path(environ[ENV_VAR]).resolve(), ENV_VAR
    last = None if for_up else remembered(environ)
    if last is not None:
        return last, f"the last `nursery cluster up` ({remembered_file(environ)})"
    return DEFAULT_DIR.resolve(), "the default"


def not_found_hint(origin: str) -> str:
    """Said after "no cluster running in DIR" when the directory was not given on purpose."""
    if origin in ("--dir", ENV_VAR):
        return ""
    return f" (found from {origin}; pass --dir DIR or set {ENV_VAR}=DIR)"
