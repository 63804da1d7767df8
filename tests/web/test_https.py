"""``nursery cluster up --tls`` in Chromium: a browser that trusts the cluster's local CA (its
root imported into the profile's NSS database, as a user does with ``certutil``) opens the app
at the https:// address, Chromium finds it installable, and it syncs live over wss://.

Nothing leaves the machine: Caddy's internal issuer signs the certificate; no ACME."""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

if not os.environ.get("CI"):  # in CI a missing Playwright is an error, not a skip
    pytest.importorskip("playwright", reason="Playwright is not installed")
from playwright.sync_api import expect

from nursery.cluster._tls import root_certificate
from tests.cluster.support import RunningCluster, require_caddy, start_cluster
from tests.servers import scratch_dir
from tests.web.browsing import PASSWORD, SECOND, add_todo, new_email, sign_in, todo
from tests.web.conftest import CHROMIUM, CHROMIUM_FLAGS

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def https_cluster(database_url: str, redis_url: str) -> Iterator[RunningCluster]:
    require_caddy()
    directory = scratch_dir("nursery-https-")
    running = start_cluster(directory, instances=2, extra_args=("--tls",), NURSERY_DATABASE_URL=database_url,
                            NURSERY_REDIS_URL=redis_url)
    try:
        yield running
    finally:
        running.stop()
        shutil.rmtree(directory, ignore_errors=True)


def trusting_home(root: Path, home: Path) -> Path:
    """A HOME whose NSS database (where Chromium on Linux keeps the user's CAs) trusts ``root``
    to identify web sites (``C,,``), as ``nursery cluster up --tls`` tells a user to do."""
    nssdb = home / ".pki" / "nssdb"
    nssdb.mkdir(parents=True)
    for argv in (["certutil", "-d", f"sql:{nssdb}", "-N", "--empty-password"],
                 ["certutil", "-d", f"sql:{nssdb}", "-A", "-t", "C,,", "-n", "nursery-local", "-i", str(root)]):
        subprocess.run(argv, check=True, capture_output=True, timeout=30)
    return home


def test_the_app_installs_from_https_and_syncs_live_over_wss(browser: Any, https_cluster: RunningCluster) -> None:
    if shutil.which("certutil") is None:
        pytest.fail("certutil is missing: apt-get install libnss3-tools (scripts/test installs it)")
    url = https_cluster.state()["proxy_url"]
    assert url == f"https://127.0.0.1:{https_cluster.proxy_port}"
    root = root_certificate(https_cluster.directory)
    profile = scratch_dir("nursery-https-profile-")
    home = trusting_home(root, profile / "home")
    context = browser.browser_type.launch_persistent_context(
        str(profile / "chromium"), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS,
        base_url=url, env={**os.environ, "HOME": str(home)})
    try:
        page = context.pages[0] if context.pages else context.new_page()
        page.set_default_timeout(10 * SECOND)
        errors: list[str] = []
        sockets: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("websocket", lambda ws: sockets.append(ws.url))
        page.goto("/")
        assert page.evaluate("window.isSecureContext") is True
        email = new_email()
        sign_in(page, email, "phone", register=True)
        add_todo(page, "over https")
        page.evaluate("""() => new Promise((resolve) => navigator.serviceWorker.controller ? resolve()
          : navigator.serviceWorker.addEventListener("controllerchange", () => resolve()))""")
        cdp = context.new_cdp_session(page)
        assert cdp.send("Page.getInstallabilityErrors") == {"installabilityErrors": []}
        assert sockets and all(s.startswith(f"wss://127.0.0.1:{https_cluster.proxy_port}/") for s in sockets)

        # Another device (this test, trusting the same root) writes: the page shows it live.
        with httpx.Client(base_url=url, verify=ssl.create_default_context(cafile=str(root)), timeout=10) as other:
            token = other.post("/api/auth/login", json={"email": email, "password": PASSWORD,
                                                        "device": "laptop"}).json()["token"]
            created = other.post("/api/todos", json={"title": "from the laptop"},
                                 headers={"Authorization": f"Bearer {token}"})
            assert created.status_code == 201, created.text
            assert created.headers["strict-transport-security"] == "max-age=31536000"
        expect(todo(page, "from the laptop")).to_be_visible(timeout=5 * SECOND)
        assert errors == []

        # The Python client too, told of the root as docs/client.md says (SSL_CERT_FILE).
        example = subprocess.run(
            [sys.executable, str(ROOT / "examples" / "sync_todos.py"), "--url", url, "--email", email],
            env={**os.environ, "NURSERY_PASSWORD": PASSWORD, "SSL_CERT_FILE": str(root)},
            capture_output=True, text=True, timeout=60)
        assert example.returncode == 0, example.stderr
        assert "resumed: mirror at rev 4, 2 change(s) applied, 0 repeated" in example.stdout
    finally:
        context.close()
        shutil.rmtree(profile, ignore_errors=True)
