"""The examples under examples/ run as a user runs them, against a real instance, and print
what docs/client.md says they print."""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import trio

from tests.harness import start_instance

ROOT = Path(__file__).resolve().parents[1]


async def test_the_sync_example_signs_in_syncs_resumes_and_signs_out(database_url: str) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            instance = await start_instance(nursery, database_url)
            email = f"example-{uuid.uuid4().hex[:8]}@example.com"
            result = await trio.run_process(
                [sys.executable, str(ROOT / "examples" / "sync_todos.py"), "--url", instance.url,
                 "--email", email, "--register"],
                env={**os.environ, "NURSERY_PASSWORD": "correct horse battery"},
                capture_stdout=True, capture_stderr=True, check=False)
            assert result.returncode == 0, result.stderr.decode()
            assert result.stdout.decode().splitlines() == [
                f"signed in as {email}",
                "live at rev 0 with 0 todo(s)",
                "  rev 1: upsert [ ] water the plants",
                "mirror at rev 1",
                "offline",
                "  rev 2: upsert [x] water the plants",
                "resumed: mirror at rev 2, 2 change(s) applied, 0 repeated",
                "  [x] water the plants",
                "signed out",
            ]
            instance.stop()
