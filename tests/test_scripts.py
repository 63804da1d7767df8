"""scripts/test as a user runs it: ``-q`` prints failures and the summary only (no skip list, no
fault-run figures), and the first line of a run that installs Debian packages says which."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

A_RUN = '''
import pytest
from tests.cluster.support import report

def test_figures(capsys):
    report(capsys, "a fault run", {"longest_gap_ms": 12})

def test_skipped():
    pytest.skip("not on this machine")

def test_failing():
    assert 1 == 2
'''


def run_tests(tmp_path: Path, *flags: str) -> str:
    (tmp_path / "test_a_run.py").write_text(A_RUN)
    result = subprocess.run(
        [str(ROOT / "scripts" / "test"), *flags, "-p", "no:cacheprovider", "--rootdir", str(ROOT),
         "-c", str(ROOT / "pyproject.toml"), str(tmp_path / "test_a_run.py")],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stdout + result.stderr  # the failing test
    return result.stdout


def test_quiet_prints_failures_and_the_summary_only(tmp_path: Path) -> None:
    out = run_tests(tmp_path, "-q")
    assert "FAILED" in out and "assert 1 == 2" in out
    assert out.rstrip().splitlines()[-1].startswith("1 failed, 1 passed, 1 skipped")
    assert "SKIPPED" not in out and "[a fault run]" not in out, out
    # Without -q the skips are listed and the figures shown, as before.
    out = run_tests(tmp_path)
    assert "SKIPPED [1]" in out and '[a fault run] {"longest_gap_ms": 12}' in out, out


def test_the_debian_packages_are_named_before_they_are_installed() -> None:
    script = (ROOT / "scripts" / "test").read_text()
    first_output = next(line for line in script.splitlines() if line.lstrip().startswith("echo"))
    assert "installing Debian packages the tests need (apt-get): ${missing[*]}" in first_output
    assert script.index(first_output) < script.index("apt-get update")
