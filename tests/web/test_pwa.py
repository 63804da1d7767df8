"""The installable app in headless Chromium: installability as Chromium judges it, the shell
opening with the network off, a new version offered rather than forced, the phone and
desktop layouts in light and dark (screenshots, no layout jump, no serious accessibility
finding).

Screenshots go to test-artifacts/; with NURSERY_DOCS_SCREENSHOT=1 they also replace the ones
in docs/ that the README shows.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.servers import scratch_dir
from tests.web.support import Cluster, Instance, Server

if not os.environ.get("CI"):  # in CI a missing Playwright is an error, not a skip
    pytest.importorskip("playwright", reason="Playwright is not installed")
from playwright.sync_api import Page, expect

from tests.web.browsing import (
    DOCS,
    PASSWORD,
    SECOND,
    Pages,
    accessibility_violations,
    add_todo,
    expect_state,
    new_email,
    sign_in,
    todo,
)
from tests.web.conftest import CHROMIUM, CHROMIUM_FLAGS

ROOT = Path(__file__).resolve().parents[2]
CONTROLLED = """() => new Promise((resolve) => navigator.serviceWorker.controller ? resolve()
  : navigator.serviceWorker.addEventListener("controllerchange", () => resolve()))"""
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True,
         "device_scale_factor": 2}
DESKTOP = {"viewport": {"width": 1280, "height": 800}}


def wait_for_service_worker(page: Page) -> None:
    """Until the service worker controls the page (it has cached the shell by then)."""
    page.evaluate(CONTROLLED)


def test_chromium_reports_it_installable_and_it_opens_offline(
    browser: Any, cluster: Cluster
) -> None:
    """A persistent profile: Chromium never offers to install from an incognito-like context,
    which is what Playwright's ordinary contexts are."""
    profile = scratch_dir("nursery-profile-")
    context = browser.browser_type.launch_persistent_context(
        str(profile), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS,
        base_url=cluster.a.url)
    try:
        page = context.pages[0] if context.pages else context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto("/")
        sign_in(page, new_email(), "desktop app", register=True)
        add_todo(page, "works offline")
        wait_for_service_worker(page)
        cdp = context.new_cdp_session(page)
        assert cdp.send("Page.getInstallabilityErrors") == {"installabilityErrors": []}
        manifest = cdp.send("Page.getAppManifest")
        assert manifest["errors"] == [] and '"display": "standalone"' in manifest["data"]

        context.set_offline(True)
        page.reload()  # the shell from the service worker, the list from IndexedDB
        expect(page.get_by_role("heading", name="Todos")).to_be_visible()
        expect(todo(page, "works offline")).to_be_visible()
        # (Offline emulation does not reach navigator.onLine of a persistent profile's
        # reloaded page, so the badge may say either.)
        expect(page.locator("#status")).to_have_attribute(
            "data-state", re.compile("offline|reconnecting"), timeout=2 * SECOND)
        assert errors == []
    finally:
        context.close()
        shutil.rmtree(profile, ignore_errors=True)


def test_a_new_version_is_offered_and_never_forced_mid_edit(
    pages: Pages, cluster: Cluster
) -> None:
    """Instance a is replaced by a copy of nursery whose stylesheet differs (a new version,
    on the same origin). An open page is told, keeps what the user is typing, and moves to
    the new version when the user says so."""
    email = cluster.register(PASSWORD)
    page = pages.open(cluster.a.url, login=cluster.login(email, PASSWORD, "laptop"))
    expect_state(page, "live")
    add_todo(page, "draft the plan")
    wait_for_service_worker(page)
    old_css = page.locator("link[rel=stylesheet]").get_attribute("href")

    page.get_by_role("button", name="Edit “draft the plan”").click()
    page.get_by_label("Notes").fill("half-typed thought")

    copy = scratch_dir("nursery-next-")
    shutil.copytree(ROOT / "nursery", copy / "nursery",
                    ignore=shutil.ignore_patterns("__pycache__"))
    with (copy / "nursery" / "api" / "web" / "static" / "style.css").open("a") as css:
        css.write("\n/* the next version */\n")
    next_version = Instance("a-next", cluster.a.env, cluster.a.log_path, port=cluster.a.port,
                            cwd=copy)
    pages.allow("Failed to load resource")  # the restart, seen by the open page
    try:
        cluster.a.stop()
        next_version.start()
        next_version.wait_ready()
        # Another tab navigates: the browser fetches /sw.js and installs the new worker.
        other_tab = pages.tab(page.context)
        expect(other_tab.locator("#update-toast")).to_be_visible(timeout=5 * SECOND)
        expect(page.locator("#update-toast")).to_be_visible()
        # Offered, not forced: the editor is still open with what was typed.
        expect(page.get_by_label("Notes")).to_have_value("half-typed thought")
        assert page.locator("link[rel=stylesheet]").get_attribute("href") == old_css

        page.get_by_role("button", name="Save").click()
        page.get_by_role("button", name="Reload").click()
        # The reload loads the new version's shell and reads the list back from IndexedDB:
        # seconds when the whole suite loads the machine (once over expect's default 5 s).
        reloaded = 15 * SECOND
        expect(page.locator("link[rel=stylesheet]")).not_to_have_attribute("href", old_css,
                                                                         timeout=reloaded)
        expect(page.locator("#update-toast")).to_be_hidden()
        row = page.locator("#todo-list li").filter(has=todo(page, "draft the plan"))
        expect(row.locator(".notes")).to_have_text("half-typed thought", timeout=reloaded)
    finally:
        next_version.stop()
        shutil.rmtree(copy, ignore_errors=True)
        cluster.a.start()
        cluster.a.wait_ready()


def layout(page: Page) -> dict[str, list[float]]:
    boxes: dict[str, list[float]] = page.evaluate("""() => Object.fromEntries(
        ['.bar', '#status', '#signout', '#todo-list'].map((s) => {
          const r = document.querySelector(s).getBoundingClientRect();
          return [s, [r.x, r.y, r.width, r.height]];
        }))""")
    return boxes


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("form", ["phone", "desktop"])
def test_layout_screenshots_and_accessibility(
    pages: Pages, cluster: Cluster, artifacts: Path, form: str, scheme: str
) -> None:
    email = cluster.register(PASSWORD, device="Work PC", email=f"ada-{form}-{scheme}@example.com")
    server = Server(cluster, email, PASSWORD, device="Tablet")  # another device, via the API
    server.create("Buy oat milk")
    server.create("Book the dentist", due="2026-12-03", tags=["health"])
    server.create("Water the plants", done=True)
    server.create("Send the quarterly report to Ada before Friday's planning meeting",
                  notes="Figures from the November close", tags=["work"])
    size = PHONE if form == "phone" else DESKTOP
    page = pages.open(cluster.a.url, login=cluster.login(email, PASSWORD, f"{form.title()}"),
                      color_scheme=scheme, **size)
    expect_state(page, "live")
    expect(page.locator("#todo-list .tag")).to_have_count(2)

    # Nothing sticks out sideways; on a phone the header is one row.
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    boxes = layout(page)
    assert abs(boxes["#signout"][1] - boxes["#status"][1]) < boxes["#status"][3], boxes

    found = accessibility_violations(page)
    assert found == [], found

    # Offline: a change made now is marked pending; the badge changes, nothing moves.
    page.context.set_offline(True)
    expect_state(page, "offline", timeout=2 * SECOND)
    assert layout(page) == boxes
    todo(page, "Buy oat milk").check()
    expect(page.locator("#pending")).to_have_text("1 change not synced")
    assert layout(page) == boxes
    page.locator("body").click(position={"x": 2, "y": 300})  # no focus ring in the picture
    name = f"web-{form}-{scheme}.png"
    page.screenshot(path=artifacts / name)  # what the screen shows

    # The editor, and the confirmation before signing out the other devices.
    page.get_by_role("button", name="Edit “Book the dentist”").click()
    expect(page.get_by_role("dialog")).to_be_visible()
    assert accessibility_violations(page) == []
    page.keyboard.press("Escape")
    page.get_by_role("button", name="Sign out all other devices").click()
    expect(page.get_by_role("dialog")).to_contain_text("Sign out your 2 other devices?")
    assert accessibility_violations(page) == []
    page.get_by_role("button", name="Cancel").click()

    if os.environ.get("NURSERY_DOCS_SCREENSHOT"):
        DOCS.mkdir(exist_ok=True)
        shutil.copyfile(artifacts / name, DOCS / name)


def test_sign_in_form_is_accessible(pages: Pages, cluster: Cluster) -> None:
    page = pages.open(cluster.a.url, **PHONE)
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert accessibility_violations(page) == []
    page.get_by_role("button", name="Sign in").click()  # empty: the field says what is wrong
    expect(page.get_by_label("Email", exact=True)).to_have_attribute("aria-invalid", "true")
    assert accessibility_violations(page) == []
    # The check can fail: a field without a label is a critical finding.
    page.evaluate("document.querySelector('#signin-form').append(document.createElement('input'))")
    assert [v["id"] for v in accessibility_violations(page)] == ["label"]
