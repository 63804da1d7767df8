"""``api``: one real instance on the test's fresh database, and an HTTP client for it.

The instance runs in pytest-trio's ``nursery`` fixture, which is cancelled when the test ends
(the instance's pools close under that cancellation; the database is dropped afterwards).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import trio

from tests.api.support import Api
from tests.harness import start_instance


@pytest.fixture
async def api(nursery: trio.Nursery, database_url: str) -> AsyncIterator[Api]:
    instance = await start_instance(nursery, database_url)
    async with httpx.AsyncClient(base_url=instance.url, timeout=10) as client:
        yield Api(instance, client)
