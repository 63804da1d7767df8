"""The real Autobahn TestSuite (``wstest -m fuzzingclient``), installed once in a cache
directory and run against a websocket URL.

The suite (``autobahntestsuite`` 25.10.1 on PyPI) is still Python 2 code: it runs on pyenv's
Python 2.7.18, installed with ``pip install --target`` into ``NURSERY_AUTOBAHN_DIR`` (default
``~/.cache/nursery-autobahn``) with its pinned Twisted 19.10 and autobahn 0.10.9. ``--target``
skips ``.pth`` files (zope is a namespace package), so wstest is started after
``site.addsitedir``.

    python -m tests.edge.autobahn --install          # what scripts/test does (~35 s once)
    python -m tests.edge.echo --port 9001 --max-message 16777216 --max-fragments 300000 \\
        --frame-rate 1000000 &
    python -m tests.edge.autobahn ws://127.0.0.1:9001/echo '1.*' '9.*'   # prints the counts
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

CACHE = Path(os.environ.get("NURSERY_AUTOBAHN_DIR", Path.home() / ".cache" / "nursery-autobahn"))
PACKAGE = "autobahntestsuite==25.10.1"
PASSING = frozenset({"OK", "INFORMATIONAL"})
WSTEST = (
    "import site, sys; site.addsitedir(sys.argv[1]); "
    "sys.argv = ['wstest', '-m', 'fuzzingclient', '-s', sys.argv[2]]; "
    "from autobahntestsuite.wstest import run; run()"
)


def python2() -> str | None:
    """A Python 2.7 to run the suite with: pyenv's, else one on the PATH."""
    root = os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv"))
    found = sorted(glob.glob(f"{root}/versions/2.7*/bin/python"))
    return found[-1] if found else shutil.which("python2.7")


def installed() -> bool:
    return (CACHE / "autobahntestsuite" / "wstest.py").exists()


def install(python: str) -> None:
    """Install the suite in ``CACHE`` (``CalledProcessError`` if pip fails)."""
    subprocess.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    "--target", str(CACHE), PACKAGE], check=True, timeout=600,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def spec(url: str, cases: list[str], outdir: Path) -> dict[str, Any]:
    return {"outdir": str(outdir), "servers": [{"agent": "nursery-edge", "url": url}],
            "cases": cases, "exclude-cases": [], "exclude-agent-cases": {}}


def command(python: str, spec_file: Path) -> list[str]:
    return [python, "-c", WSTEST, str(CACHE), str(spec_file)]


def results(outdir: Path) -> dict[str, dict[str, Any]]:
    """Each case's result (``behavior``, ``behaviorClose``, ``duration`` in ms)."""
    index = json.loads((outdir / "index.json").read_text())
    return dict(index["nursery-edge"])


def failures(found: dict[str, dict[str, Any]]) -> dict[str, tuple[str, str]]:
    return {case: (r["behavior"], r["behaviorClose"]) for case, r in found.items()
            if r["behavior"] not in PASSING or r["behaviorClose"] not in PASSING}


def counts(found: dict[str, dict[str, Any]]) -> Counter[str]:
    return Counter(r["behavior"] for r in found.values())


def main() -> None:
    python = python2()
    if python is None:
        sys.exit("no Python 2.7 (pyenv install 2.7.18): the Autobahn TestSuite cannot run here")
    if not installed():
        install(python)
    if sys.argv[1:] == ["--install"]:
        return
    url, cases = sys.argv[1], sys.argv[2:] or ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*",
                                               "9.*", "10.*"]
    outdir = Path("autobahn-report").absolute()
    spec_file = outdir / "spec.json"
    outdir.mkdir(exist_ok=True)
    spec_file.write_text(json.dumps(spec(url, cases, outdir)))
    subprocess.run(command(python, spec_file), check=True, cwd=outdir,
                   stdout=subprocess.DEVNULL)
    found = results(outdir)
    print(dict(counts(found)), failures(found) or "no failures", f"report: {outdir}/index.html")


if __name__ == "__main__":
    main()
