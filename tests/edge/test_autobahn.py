"""The real Autobahn TestSuite (``autobahn.py``) against the edge's echo endpoint
(``echo.py``): sections 1-7, 9 and 10, all its cases that apply without compression (12 and
13 are permessage-deflate, which the edge declines). Every case must be OK or INFORMATIONAL:
no NON-STRICT (e.g. invalid UTF-8 noticed late), no FAILED.

Section 9 sends messages up to 16 MiB, in fragments down to 64 bytes (65,536 of them): the
echo server's budgets are raised for it. The whole run took 14 s here (9.3.1, 4 MiB in
64-byte fragments: 0.6 s; it was 36 s before reassembly became linear). Skipped, with the
reason, where no Python 2.7 is installed; the suite is installed on first use (~35 s).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import trio

from nursery.edge.websocket import FrameLimits
from nursery.rates import Rate
from tests.edge import autobahn
from tests.edge.echo import echo_server

SECTIONS = ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "9.*", "10.*"]
CASE_COUNT = 301  # what the suite has in those sections
# Section 9's sizes: 16 MiB messages, 4 MiB ones in 64-byte fragments, 1,000 messages in a row.
SECTION_9_LIMITS = FrameLimits(max_message=16 << 20, max_fragments=1 << 17,
                               frame_rate=Rate(1_000_000, 1.0))


async def test_the_autobahn_testsuite_passes_every_case(tmp_path: Path) -> None:
    python = autobahn.python2()
    if python is None:
        pytest.skip("no Python 2.7 to run the Autobahn TestSuite (pyenv install 2.7.18)")
    if not autobahn.installed():
        await trio.to_thread.run_sync(autobahn.install, python)
    with trio.fail_after(300):
        async with echo_server(SECTION_9_LIMITS) as (host, port):
            spec_file = tmp_path / "spec.json"
            spec = autobahn.spec(f"ws://{host}:{port}/echo", SECTIONS, tmp_path / "report")
            spec_file.write_text(json.dumps(spec))
            started = time.perf_counter()
            # Its output goes to a file: a pipe nobody reads would stall the run.
            with open(tmp_path / "wstest.log", "wb") as log:
                await trio.run_process(autobahn.command(python, spec_file), cwd=tmp_path,
                                       stdout=log, stderr=log)
            elapsed = time.perf_counter() - started
    found = autobahn.results(tmp_path / "report")
    slowest = max(found, key=lambda case: found[case]["duration"])
    print(f"Autobahn: {dict(autobahn.counts(found))} in {elapsed:.1f} s;"
          f" slowest {slowest} {found[slowest]['duration']} ms")
    assert len(found) == CASE_COUNT
    assert not autobahn.failures(found)
    assert found["9.3.1"]["duration"] < 5000 and found["9.4.1"]["duration"] < 5000
