"""The live todo page in headless Chromium: two devices, revocation, a restart.

"Within 1 s" is Playwright's ``expect(..., timeout=1000)``, counted from the moment the action
on the other device returned. Each page records console errors and uncaught exceptions (a CSP
violation is one); a test fails if its pages logged any.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import pytest

from tests.web.support import Cluster

if not os.environ.get("CI"):  # in CI a missing Playwright is an error, not a skip
    pytest.importorskip("playwright", reason="Playwright is not installed")
from playwright.sync_api import WebSocket, expect

from tests.web.browsing import (
    PASSWORD,
    SECOND,
    Pages,
    add_todo,
    device_row,
    edit_todo,
    expect_state,
    new_email,
    sign_in,
    todo,
)

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
    expect(laptop.get_by_role("dialog", name="Edit “buy milk”")).to_be_visible()
    laptop.keyboard.type("buy oat milk")  # the title is selected: typing replaces it
    laptop.keyboard.press("Enter")
    expect(todo(phone, "buy oat milk")).to_be_visible(timeout=SECOND)
    expect(laptop.get_by_role("button", name="Edit “buy oat milk”")).to_be_focused()

    # Notes, due day and tags, from the other device.
    edit_todo(phone, "buy oat milk", title="buy soy milk", notes="the unsweetened one",
              due="2026-12-01", tags="shop, food")
    row = laptop.locator("#todo-list li").filter(has=todo(laptop, "buy soy milk"))
    expect(row.locator(".details")).to_have_text(re.compile(
        r"^(Overdue: |Due )(1 Dec 2026|Dec 1, 2026)#shop#foodthe unsweetened one$"), timeout=SECOND)
    expect(todo(laptop, "buy soy milk")).to_have_accessible_description(re.compile("#shop"))

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
    from its last revision (the backlog over /ws, no refetch) and shows the changes.

    On a phone-sized screen, where the longer "Reconnecting…" used to push "Sign out" onto a
    second line: nothing on the page moves when the badge changes."""
    email = cluster.register(PASSWORD)
    laptop = pages.open(cluster.a.url, login=cluster.login(email, PASSWORD, "laptop"),
                        viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
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

    live_layout = layout(laptop)
    exit_status = cluster.a.stop()
    expect_state(laptop, "reconnecting", timeout=2 * SECOND)
    expect(laptop.locator("#status-text")).to_have_text("Reconnecting…")
    assert layout(laptop) == live_layout

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


def layout(page: Any) -> dict[str, Any]:
    """Where the header's parts and the list are (the badge's text aside)."""
    boxes: dict[str, Any] = page.evaluate("""() => Object.fromEntries(
        ['.bar', '#status', '#signout', '#whoami', '#todo-list'].map((s) => {
          const r = document.querySelector(s).getBoundingClientRect();
          return [s, [r.x, r.y, r.width, r.height]];
        }))""")
    return boxes
