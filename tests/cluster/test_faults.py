"""Rows of the fault table (bench/faults.py) that run in seconds, as tests: under a steady
load through Caddy (4 devices, 2 writers retrying with the same Idempotency-Key), Redis
restarts, PostgreSQL is stopped for 10 s then started, Caddy restarts. Each time no write
fails, none is lost or applied twice, and every device ends with exactly the server's state;
service is normal again within a bound. (The rolling restart and kill -9 rows:
test_under_load.py, on the same machinery.)"""

from __future__ import annotations

import pytest
import trio

from tests.cluster.faults import FAULTS, POSTGRES_DOWN, Deployment, run_case
from tests.cluster.support import report

# Seconds from the fault until service is normal again, beyond the time the component was
# away: generous bounds for a loaded 2-core machine; the table in the README has the figures.
RECOVERY_MARGIN = {"redis": 5.0, "postgres": 10.0, "caddy": 5.0}


@pytest.mark.parametrize("fault", ["redis", "postgres", "caddy"])
async def test_fault_under_load(deployment: Deployment, fault: str,
                                capsys: pytest.CaptureFixture[str]) -> None:
    title, inject = FAULTS[fault]
    with trio.fail_after(120):
        figures = await run_case(deployment, inject)
    report(capsys, title, figures)
    assert figures["writes_failed"] == 0, figures["problems"]
    assert figures["duplicates"] == figures["lost"] == figures["unexpected"] == 0, figures["problems"]
    assert figures["devices_converged"], figures["problems"]
    assert figures["writes_succeeded"] == figures["writes_attempted"] > 0
    assert figures["recovered_s"] <= figures["fault_s"] + RECOVERY_MARGIN[fault], figures
    if fault == "postgres":
        assert figures["fault_s"] >= POSTGRES_DOWN
        assert figures["writes_retried"] > 0  # writes did meet the outage, and got through
