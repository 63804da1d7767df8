"""The web page in a real browser: headless Chromium (Debian's) driven by Playwright.

Why this shape: Playwright's sync API runs its own event loop, so the browser tests are plain
sync tests, and the servers they talk to are real ``nursery serve`` processes (the same command
an operator runs), which the test can SIGTERM and start again on the same port. Two instances
share one database and one Redis, like a deployment: a page on one instance sees changes made
through the other.

Fixtures (all sync):

- ``cluster`` (module): instances ``a`` and ``b`` on a database of their own; each test
  signs up its own user, so the tests of a module share the instances without seeing each
  other's data. A test that restarts an instance leaves it running again.
- ``browser`` (session): one Chromium; each test opens fresh contexts (a context is a browser
  profile: its own localStorage, so its own device).

Playwright's bundled browsers are never used (``playwright install`` cannot download here):
``executable_path`` is the system's Chromium, with the flags known to work as root in a closed
network. Without Playwright or Chromium these tests are skipped, except in CI (``CI`` set),
where that is a failure of the CI setup.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.servers import PrivatePostgres, RedisServer, new_database, scratch_dir
from tests.web.support import Cluster, Instance

CHROMIUM = Path(os.environ.get("NURSERY_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_FLAGS = [
    "--no-sandbox",  # we run as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",  # else it floods the closed network with connections
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
SECRET = "web-test-secret-of-32-characters-at-least"


def _missing(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"browser tests cannot run: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def cluster(pg_server: PrivatePostgres, redis_server: RedisServer) -> Iterator[Cluster]:
    directory = scratch_dir("nursery-web-")
    database_url = new_database(pg_server)
    env = {k: v for k, v in os.environ.items() if not k.startswith("NURSERY_")}
    env.update(
        NURSERY_DATABASE_URL=database_url,
        NURSERY_REDIS_URL=redis_server.url,
        NURSERY_SECRET_KEY=SECRET,
        NURSERY_LOG_LEVEL="WARNING",
        # An idle keep-alive connection (a browser keeps several) currently holds a graceful
        # shutdown until this deadline; websockets get their 1012 at once regardless.
        NURSERY_SHUTDOWN_TIMEOUT="2",
    )
    instances = [
        Instance(name, {**env, "NURSERY_INSTANCE_NAME": name}, directory / f"{name}.log")
        for name in ("a", "b")
    ]
    try:
        for instance in instances:  # start both, then wait: they boot in parallel
            instance.start()
        for instance in instances:
            instance.wait_ready()
        yield Cluster(*instances)
    finally:
        for instance in instances:
            instance.stop()
        pg_server.drop_database(database_url.rsplit("/", 1)[1])
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("Playwright is not installed (pip install playwright)")
    if not CHROMIUM.exists():
        _missing(f"{CHROMIUM} is missing (apt-get install chromium)")
    manager = sync_playwright()
    playwright = manager.__enter__()
    try:
        # Playwright adds --headless and a fresh, empty --user-data-dir of its own.
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS
        )
        try:
            yield browser
        finally:
            browser.close()
    finally:
        manager.__exit__(None, None, None)


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture
def pages(browser: Any) -> Iterator[Any]:
    """Pages (tests/web/browsing.py); the test fails if one logged an unexpected error."""
    from tests.web.browsing import Pages

    opened = Pages(browser)
    try:
        yield opened
        assert opened.errors == []
    finally:
        opened.close()
