"""Schemathesis against /openapi.json of a real instance: no 500, no response outside the spec.

The instance runs in this test's trio run (``start_instance``); the schemathesis CLI runs as a
subprocess against it, authenticated by ``schemathesis_hooks.py`` (a live token, renewed when
the fuzzer logs itself out). Every response is checked for: not a server error, a status the
spec lists for that operation, a body matching the spec's schema, the content type and the
headers the spec declares (Retry-After on 429 and 503). The server's own log must hold no
unexpected exception either (a 500 the fuzzer could not see, e.g. in a response already sent).

Bounded for CI (about a minute on 2 cores); tests/security/README.md says how to run longer.
Environment: NURSERY_FUZZ_EXAMPLES (per operation and phase, default 20), NURSERY_FUZZ_SEED
(default fixed, "random" for a new one), NURSERY_FUZZ_PHASES, NURSERY_FUZZ_WORKERS,
NURSERY_FUZZ_MAX_TIME (seconds; makes fuzzing repeat until spent), NURSERY_FUZZ_TIMEOUT.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path

import httpx
import pytest
import trio

from tests.harness import register, start_instance
from tests.security.fuzz import read_report

pytest.importorskip("schemathesis", reason="schemathesis is a test dependency (pyproject)")

HOOKS = Path(__file__).with_name("schemathesis_hooks.py")
CHECKS = ("not_a_server_error,status_code_conformance,response_schema_conformance,"
          "content_type_conformance,response_headers_conformance")
EXAMPLES = int(os.environ.get("NURSERY_FUZZ_EXAMPLES", "20"))
SEED = os.environ.get("NURSERY_FUZZ_SEED", "20261125")
PHASES = os.environ.get("NURSERY_FUZZ_PHASES", "examples,coverage,fuzzing,stateful")
WORKERS = os.environ.get("NURSERY_FUZZ_WORKERS", "2")
MAX_TIME = os.environ.get("NURSERY_FUZZ_MAX_TIME")
TIMEOUT = float(os.environ.get("NURSERY_FUZZ_TIMEOUT", "240"))
# Authenticated operations that a random request can complete (2xx): the token must work.
MUST_SUCCEED = ["GET /api/me", "GET /api/sessions", "GET /api/todos", "POST /api/todos",
                "GET /api/changes", "PATCH /api/todos/{id}", "GET /api/todos/{id}"]


async def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery, httpx.AsyncClient(timeout=10) as client:
            instance = await start_instance(nursery, database_url)
            user = await register(client, instance.url, "fuzz setup")
            for title in ("first", "second", "third"):  # something to read, page and change
                r = await client.post(f"{instance.url}/api/todos", json={"title": title}, headers=user.headers)
                assert r.status_code == 201, r.text
            report_dir = tmp_path / "report"
            command = [
                sys.executable, "-m", "schemathesis.cli", "run", f"{instance.url}/openapi.json",
                "--checks", CHECKS, "--max-examples", str(EXAMPLES), "--phases", PHASES,
                "--workers", WORKERS, "--request-timeout", "10", "--report", "ndjson",
                "--report-dir", str(report_dir), "--suppress-health-check", "all",
                *([] if SEED == "random" else ["--seed", SEED]),
                *(["--max-time", MAX_TIME] if MAX_TIME else []),
            ]
            env = {
                **os.environ, "SCHEMATHESIS_HOOKS": str(HOOKS), "NURSERY_FUZZ_BASE": instance.url,
                "NURSERY_FUZZ_EMAIL": user.email, "NURSERY_FUZZ_PASSWORD": user.password,
                "NO_COLOR": "1", "COLUMNS": "120",
            }
            started = trio.current_time()
            result = await trio.run_process(command, env=env, capture_stdout=True, capture_stderr=True, check=False)
            elapsed = trio.current_time() - started
            output = result.stdout.decode(errors="replace") + result.stderr.decode(errors="replace")
            report = read_report(report_dir)
            seed = re.search(r"Seed: (\d+)", output)
            print(f"schemathesis: {report.total} cases in {elapsed:.0f} s, seed {seed and seed[1]}\n{report.table()}")
            assert result.returncode == 0 and not report.failures, "\n".join(
                [*report.failures, output[-6000:]])
            assert not report.errors, report.errors  # e.g. a request that timed out
            for operation in MUST_SUCCEED:
                statuses = report.statuses[operation]
                assert any(200 <= (s or 0) < 300 for s in statuses), (operation, dict(statuses))
            server_errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
            assert not server_errors, server_errors
            r = await client.get(f"{instance.url}/readyz")
            assert r.status_code == 200
            nursery.cancel_scope.cancel()
