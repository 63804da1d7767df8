"""A pytest plugin that moves every test instance's todos and audit log to MongoDB: the real
replica set at ``NURSERY_TEST_MONGO_URL`` when it is set, else ``MongoDouble`` (a test double).
Users and sessions stay in PostgreSQL, as in production. Opt-in, for checking that the whole
API and sync suites hold on the MongoDB backend (about 4 minutes for the lot)::

    .venv/bin/python -m pytest -p tests.stores.on_mongo tests/api tests/test_live_sync.py

It patches the settings ``tests.harness.start_instance`` builds, so every instance of one test
shares one MongoDB database, like a deployment. tests/api/test_activity.py and
test_analytics.py pick their backends themselves: leave them out of such a run.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import tests.harness
from nursery.config import Settings
from tests.stores.backends import MONGO_URL, instance_mongo_url
from tests.stores.mongo_double import MongoDouble


@pytest.fixture(autouse=True)
def _todos_on_mongo(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    url = instance_mongo_url("mongo" if MONGO_URL else "mongo-double", monkeypatch)

    def settings(**values: Any) -> Settings:
        return Settings(**{"mongo_url": url, **values})

    monkeypatch.setattr(tests.harness, "Settings", settings)
    yield
    MongoDouble.reset()
