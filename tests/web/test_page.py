"""The live todo page in headless Chromium: two devices, revocation, a restart, screenshots.

"Within 1 s" is Playwright's ``expect(..., timeout=1000)``, counted from the moment the action
on the other device returned. Each page records console errors and uncaught exceptions (a CSP
violation is one); a test fails if its pages logged any.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.web.support import Cluster

if not os.environ.get("CI"):  # in CI a missing Playwright is an error, not a skip
    pytest.importorskip("playwright", reason="Playwright is not installed")
from playwright.sync_api import Page, WebSocket, expect

SECOND = 1000  # ms, Playwright's unit
PASSWORD = "correct horse battery"
DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "screenshot.png"
# Console messages that are not the page's fault: the browser reports a refused or cut
# connection itself while an instance is down; the page handles it.
EXPECTED_CONSOLE = re.compile(r"WebSocket connection to .* failed|net::ERR_CONNECTION_REFUSED")


class Pages:
    """Opens pages, each in its own browser context (= its own device), and closes them."""

    def __init__(self, browser: Any) -> None:
        self.browser = browser
        self.contexts: list[Any] = []
        self.errors: list[str] = []
        self.allowed = [EXPECTED_CONSOLE]

    def allow(self, pattern: str) -> None:
        """A console error matching ``pattern`` is expected from now on."""
        self.allowed.append(re.compile(pattern))

    def open(self, base_url: str, *, login: dict[str, Any] | None = None,
             **context_options: Any) -> Page:
        """A page at ``base_url``/; with ``login`` (see ``Cluster.login``) already signed in,
        as if this browser had signed in before (quicker than typing it)."""
        if login is not None:
            stored = {"name": "nursery.login", "value": json.dumps(login)}
            context_options["storage_state"] = {
                "cookies": [], "origins": [{"origin": base_url, "localStorage": [stored]}],
            }
        context = self.browser.new_context(base_url=base_url, **context_options)
        self.contexts.append(context)
        return self.tab(context)

    def tab(self, context: Any) -> Page:
        """A new page (tab) of ``context`` at /: the same profile, so the same device."""
        page: Page = context.new_page()
        page.set_default_timeout(10 * SECOND)
        page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))
        page.on("console", lambda msg: self._console(msg))
        page.goto("/")
        return page

    def _console(self, msg: Any) -> None:
        if msg.type == "error" and not any(p.search(msg.text) for p in self.allowed):
            self.errors.append(f"console: {msg.text}")

    def close(self) -> None:
        for context in self.contexts:
            context.close()


@pytest.fixture
def pages(browser: Any) -> Iterator[Pages]:
    opened = Pages(browser)
    try:
        yield opened
        assert opened.errors == []
    finally:
        opened.close()


def sign_in(page: Page, email: str, device: str, *, register: bool = False) -> None:
    page.get_by_label("Email", exact=True).fill(email)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Name of this device").fill(device)
    page.get_by_role("button", name="Create account" if register else "Sign in").click()
    expect_state(page, "live")


def expect_state(page: Page, state: str, timeout: float = 5 * SECOND) -> None:
    expect(page.locator("#status")).to_have_attribute("data-state", state, timeout=timeout)


def add_todo(page: Page, title: str) -> None:
    field = page.get_by_label("New todo")
    field.fill(title)
    field.press("Enter")
    expect(todo(page, title)).to_be_visible()


def todo(page: Page, title: str) -> Any:
    """A todo's checkbox: its accessible name is the todo's title."""
    return page.get_by_role("checkbox", name=title, exact=True)


def device_row(page: Page, name: str) -> Any:
    return page.locator("#device-list li").filter(has=page.get_by_text(name, exact=True))


def new_email() -> str:
    return f"web-{uuid.uuid4().hex[:10]}@example.com"


def test_two_devices_see_each_others_changes_within_a_second(
    pages: Pages, cluster: Cluster
) -> None:
    email = new_email()
    laptop = pages.open(cluster.a.url)
    sign_in(laptop, email, "laptop", register=True)
    phone = pages.open(cluster.b.url)  # the other instance: changes cross Redis
    sign_in(phone, email, "phone")

    add_todo(laptop, "buy milk")
    expect(todo(phone, "buy milk")).to_be_visible(timeout=SECOND)

    todo(phone, "buy milk").check()
    expect(todo(laptop, "buy milk")).to_be_checked(timeout=SECOND)
    todo(laptop, "buy milk").uncheck()
    expect(todo(phone, "buy milk")).not_to_be_checked(timeout=SECOND)

    # Edit with the keyboard only: the edit button, type, Enter.
    laptop.get_by_role("button", name="Edit “buy milk”").focus()
    laptop.keyboard.press("Enter")
    laptop.keyboard.press("Control+a")
    laptop.keyboard.type("buy oat milk")
    laptop.keyboard.press("Enter")
    expect(todo(phone, "buy oat milk")).to_be_visible(timeout=SECOND)
    expect(laptop.get_by_role("button", name="Edit “buy oat milk”")).to_be_focused()

    # An edit of a title that changed elsewhere meanwhile is refused (409), and said so.
    pages.allow("the server responded with a status of 409")
    laptop.get_by_role("button", name="Edit “buy oat milk”").click()
    phone.get_by_role("button", name="Edit “buy oat milk”").click()
    phone.get_by_label("New title for “buy oat milk”").fill("buy soy milk")
    phone.keyboard.press("Enter")
    expect(laptop.locator("[aria-label='Delete “buy soy milk”']")).to_have_count(1)  # arrived
    laptop.get_by_label("New title for “buy oat milk”").fill("buy rice milk")
    laptop.keyboard.press("Enter")
    expect(laptop.locator("#alert")).to_contain_text("changed on another device")
    expect(todo(laptop, "buy soy milk")).to_be_visible()
    expect(todo(phone, "buy soy milk")).to_be_visible()

    phone.get_by_role("button", name="Delete “buy soy milk”").click()
    expect(todo(laptop, "buy soy milk")).to_have_count(0, timeout=SECOND)
    expect(laptop.locator("#empty")).to_have_text("Nothing to do yet. Add a todo above.")

    # Filters are local to the page.
    add_todo(phone, "walk the dog")
    add_todo(phone, "water plants")
    todo(laptop, "water plants").check()
    laptop.get_by_role("button", name="Done", exact=True).click()
    expect(laptop.locator("#todo-list li")).to_have_count(1)
    expect(todo(laptop, "water plants")).to_be_visible()
    laptop.get_by_role("button", name="Active").click()
    expect(todo(laptop, "walk the dog")).to_be_visible()
    expect(laptop.locator("#count")).to_have_text("1 of 2 left")
    expect(phone.locator("#todo-list li")).to_have_count(2)

    # Each sees the other in its devices, online.
    expect(device_row(laptop, "phone")).to_have_class(re.compile(r"\bonline\b"))
    expect(device_row(phone, "laptop")).to_have_class(re.compile(r"\bonline\b"))
    expect(device_row(laptop, "laptop")).to_contain_text("this device")

    # Offline and back: the indicator says so, and the page catches up when it can.
    laptop.context.set_offline(True)
    expect_state(laptop, "offline", timeout=2 * SECOND)
    expect(laptop.locator("#status-text")).to_have_text("Offline")
    add_todo(phone, "while offline")
    laptop.context.set_offline(False)
    expect_state(laptop, "live")
    expect(todo(laptop, "while offline")).to_be_visible(timeout=SECOND)


def test_tabs_of_one_browser_are_one_device(pages: Pages, cluster: Cluster) -> None:
    email = cluster.register(PASSWORD)
    first = pages.open(cluster.a.url, login=cluster.login(email, PASSWORD, "desk"))
    second = pages.tab(first.context)
    expect_state(first, "live")
    expect_state(second, "live")
    expect(second.locator("#device-list li")).to_have_count(2)  # desk (twice connected), setup

    first.get_by_role("button", name="Sign out", exact=True).click()
    expect(second.get_by_role("heading", name="Sign in")).to_be_visible(timeout=SECOND)
    expect(second.locator("#signin-notice")).to_have_text("You signed out in another tab.")


def test_a_device_revoked_elsewhere_is_signed_out_within_a_second(
    pages: Pages, cluster: Cluster
) -> None:
    email = cluster.register(PASSWORD)
    laptop = pages.open(cluster.a.url, login=cluster.login(email, PASSWORD, "laptop"))
    phone = pages.open(cluster.b.url, login=cluster.login(email, PASSWORD, "phone"))
    expect_state(laptop, "live")
    expect_state(phone, "live")
    add_todo(phone, "secret plans")

    revoke = laptop.get_by_role("button", name="Sign out “phone”")
    expect(revoke).to_be_visible()  # the new device arrived live (a `session` frame)
    revoke.click()

    expect(phone.get_by_role("heading", name="Sign in")).to_be_visible(timeout=SECOND)
    expect(phone.locator("#signin-notice")).to_contain_text("signed out")
    expect(todo(phone, "secret plans")).to_have_count(0)
    assert phone.evaluate("localStorage.getItem('nursery.login')") is None
    phone.reload()  # the token is gone for good
    expect(phone.get_by_role("heading", name="Sign in")).to_be_visible()

    expect(device_row(laptop, "phone")).to_have_count(0)
    expect(device_row(laptop, "setup")).to_be_visible()
    expect_state(laptop, "live")


def test_page_resumes_after_its_instance_restarts(pages: Pages, cluster: Cluster) -> None:
    """SIGTERM → the page gets 1012 and shows "Reconnecting…"; meanwhile another device
    changes things through the other instance; when the instance is back, the page resumes
    from its last revision (the backlog over /ws, no refetch) and shows the changes."""
    email = cluster.register(PASSWORD)
    laptop = pages.open(cluster.a.url, login=cluster.login(email, PASSWORD, "laptop"))
    hellos: list[dict[str, Any]] = []

    def on_websocket(ws: WebSocket) -> None:
        ws.on("framesent", lambda payload: hellos.append(json.loads(payload))
              if '"hello"' in str(payload) else None)

    laptop.on("websocket", on_websocket)
    phone = pages.open(cluster.b.url, login=cluster.login(email, PASSWORD, "phone"))
    expect_state(laptop, "live")
    expect_state(phone, "live")
    for title in ["stays", "gets done", "goes away"]:
        add_todo(laptop, title)
    expect(phone.locator("#todo-list li")).to_have_count(3, timeout=SECOND)
    snapshots: list[str] = []
    laptop.on("request", lambda request: snapshots.append(request.url)
              if "/api/todos?" in request.url else None)

    exit_status = cluster.a.stop()
    expect_state(laptop, "reconnecting", timeout=2 * SECOND)
    expect(laptop.locator("#status-text")).to_have_text("Reconnecting…")

    add_todo(phone, "added meanwhile")
    todo(phone, "gets done").check()
    phone.get_by_role("button", name="Delete “goes away”").click()
    expect(todo(phone, "goes away")).to_have_count(0)

    cluster.a.start()
    cluster.a.wait_ready()
    expect_state(laptop, "live", timeout=10 * SECOND)
    expect(todo(laptop, "added meanwhile")).to_be_visible(timeout=SECOND)
    expect(todo(laptop, "gets done")).to_be_checked(timeout=SECOND)
    expect(todo(laptop, "goes away")).to_have_count(0, timeout=SECOND)
    expect(laptop.locator("#todo-list li")).to_have_count(3)

    assert exit_status == 0  # a clean shutdown
    assert snapshots == []  # resumed over /ws, not refetched
    assert hellos[0]["since"] == 0  # a fresh user: the list was empty at revision 0
    assert hellos[-1]["since"] == 3  # the three adds seen before the restart
    add_todo(laptop, "after the restart")
    expect(todo(phone, "after the restart")).to_be_visible(timeout=SECOND)


def test_screenshots_of_the_main_view(pages: Pages, cluster: Cluster, artifacts: Path) -> None:
    """Desktop and phone-size views and the sign-in form, saved under test-artifacts/ (look
    at them); with
    NURSERY_DOCS_SCREENSHOT=1 the desktop one also becomes docs/screenshot.png."""
    email = cluster.register(PASSWORD, device="Work PC", email="ada@example.com")
    desktop = pages.open(cluster.a.url, login=cluster.login(email, PASSWORD, "Laptop"),
                         viewport={"width": 1000, "height": 520})
    phone = pages.open(cluster.b.url, login=cluster.login(email, PASSWORD, "Phone"),
                       viewport={"width": 390, "height": 760},
                       is_mobile=True, has_touch=True, device_scale_factor=2)
    expect_state(desktop, "live")
    for title in ["Buy oat milk", "Book the dentist", "Water the plants",
                  "Send the quarterly report to Ada before Friday's planning meeting"]:
        add_todo(desktop, title)
    todo(desktop, "Water the plants").check()
    expect(todo(phone, "Water the plants")).to_be_checked(timeout=SECOND)
    expect(device_row(desktop, "Phone")).to_have_class(re.compile(r"\bonline\b"))
    expect(device_row(phone, "Laptop")).to_have_class(re.compile(r"\bonline\b"))
    desktop.locator("body").click(position={"x": 5, "y": 510})  # no focus ring in the picture

    desktop.screenshot(path=artifacts / "web-main.png")
    signin = pages.open(cluster.a.url, viewport={"width": 390, "height": 640})
    signin.get_by_label("Email", exact=True).focus()
    signin.screenshot(path=artifacts / "web-signin.png")
    phone.screenshot(path=artifacts / "web-phone.png", full_page=True)
    # Nothing sticks out sideways on a phone.
    assert phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    if os.environ.get("NURSERY_DOCS_SCREENSHOT"):
        DOCS_SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(artifacts / "web-main.png", DOCS_SCREENSHOT)
