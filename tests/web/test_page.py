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

    # One outbox for the device: a write made offline in one tab shows pending in the other,
    # and is sent once when the network returns.
    first.context.set_offline(True)
    expect_state(first, "offline", timeout=2 * SECOND)
    add_todo(first, "from the first tab")
    expect(second.locator("#todo-list li.pending")).to_have_count(1, timeout=SECOND)
    expect(todo(second, "from the first tab")).to_be_visible()
    first.context.set_offline(False)
    expect(second.locator("#pending")).to_have_text("", timeout=2 * SECOND)
    expect(first.locator("#pending")).to_have_text("")
    expect(second.locator("#todo-list li")).to_have_count(1)

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


def test_the_whole_todo_from_the_keyboard(pages: Pages, cluster: Cluster) -> None:
    """Shortcuts, search, tag filter, undo, clear completed, and changes from another device
    read out (the live region); the other device sees each step."""
    email = cluster.register(PASSWORD)
    desk = pages.open(cluster.a.url, login=cluster.login(email, PASSWORD, "desk"))
    phone = pages.open(cluster.b.url, login=cluster.login(email, PASSWORD, "phone"))
    expect_state(desk, "live")
    expect_state(phone, "live")
    keys = desk.keyboard
    desk.evaluate("""() => {  // everything the desk's live region says, in order
      window.said = [];
      new MutationObserver(() => window.said.push(document.querySelector('#announcer').textContent))
        .observe(document.querySelector('#announcer'), {childList: true, characterData: true, subtree: true});
    }""")

    desk.locator("body").click(position={"x": 2, "y": 2})
    keys.press("n")  # new todo
    expect(desk.get_by_label("New todo")).to_be_focused()
    for title in ["pay rent", "call mum", "fix bike"]:
        keys.type(title)
        keys.press("Enter")
    expect(desk.locator("#todo-list li")).to_have_count(3)
    expect(phone.locator("#todo-list li")).to_have_count(3, timeout=SECOND)
    # The desk's own writes are not read out to the desk; the phone hears of them.
    expect(phone.locator("#announcer")).to_contain_text("was added", timeout=SECOND)

    todo(desk, "pay rent").focus()
    keys.press("j")  # next todo
    expect(todo(desk, "call mum")).to_be_focused()
    keys.press("x")  # done
    expect(todo(phone, "call mum")).to_be_checked(timeout=SECOND)
    keys.press("ArrowDown")
    expect(todo(desk, "fix bike")).to_be_focused()
    keys.press("e")  # edit: tags and a due day
    editor = desk.get_by_role("dialog", name="Edit “fix bike”")
    expect(editor).to_be_visible()
    editor.get_by_label("Tags").fill("errands, outside")
    editor.get_by_label("Due date").fill("2026-12-01")
    editor.get_by_label("Tags").press("Enter")  # saves
    expect(editor).to_be_hidden()
    expect(todo(desk, "fix bike")).to_be_focused()
    todo(phone, "pay rent").check()  # from the other device: read out on the desk
    expect(desk.locator("#announcer")).to_have_text(
        "On another device: “pay rent” was marked done.", timeout=SECOND)

    # Search and tag filter (local: they work offline too).
    keys.press("/")
    expect(desk.get_by_label("Search")).to_be_focused()
    keys.type("MUM")
    expect(desk.locator("#todo-list li")).to_have_count(1)
    expect(todo(desk, "call mum")).to_be_visible()
    keys.press("Escape")  # clears the search
    expect(desk.locator("#todo-list li")).to_have_count(3)
    desk.get_by_label("Tag", exact=True).select_option("errands")
    expect(desk.locator("#todo-list li")).to_have_count(1)
    expect(todo(desk, "fix bike")).to_be_visible()
    desk.get_by_label("Tag", exact=True).select_option("")

    # Delete with the keyboard, undo: the todo comes back with its fields, everywhere.
    todo(desk, "fix bike").focus()
    keys.press("Delete")
    expect(todo(desk, "fix bike")).to_have_count(0)
    expect(todo(phone, "fix bike")).to_have_count(0, timeout=SECOND)
    expect(desk.locator("#undo-text")).to_have_text("Deleted “fix bike”.")
    keys.press("Control+z")
    expect(todo(desk, "fix bike")).to_be_visible()
    expect(todo(phone, "fix bike")).to_be_visible(timeout=SECOND)
    restored = phone.locator("#todo-list li").filter(has=todo(phone, "fix bike"))
    expect(restored.locator(".tag")).to_have_text(["#errands", "#outside"])

    # Clear completed: both done todos go, one Undo brings both back.
    desk.get_by_role("button", name="Clear completed").click()
    expect(desk.locator("#undo-text")).to_have_text("Deleted 2 todos.")
    expect(phone.locator("#todo-list li")).to_have_count(1, timeout=SECOND)
    desk.get_by_role("button", name="Undo").click()
    expect(phone.locator("#todo-list li")).to_have_count(3, timeout=SECOND)
    expect(todo(phone, "call mum")).to_be_checked()

    keys.press("?")
    expect(desk.get_by_role("dialog", name="Keyboard shortcuts")).to_be_visible()
    keys.press("Escape")
    expect(desk.get_by_role("dialog", name="Keyboard shortcuts")).to_be_hidden()
    # The desk heard of the phone's one change, and of none of its own.
    assert desk.evaluate("window.said") == ["On another device: “pay rent” was marked done."]


def test_signing_out_the_other_devices_asks_first(pages: Pages, cluster: Cluster) -> None:
    email = cluster.register(PASSWORD)
    laptop = pages.open(cluster.a.url, login=cluster.login(email, PASSWORD, "laptop"))
    phone = pages.open(cluster.b.url, login=cluster.login(email, PASSWORD, "phone"))
    expect_state(laptop, "live")
    expect(laptop.locator("#device-list li")).to_have_count(3)  # laptop, phone, setup

    laptop.get_by_role("button", name="Sign out all other devices").click()
    dialog = laptop.get_by_role("dialog")
    expect(dialog).to_contain_text("Sign out your 2 other devices?")
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    expect_state(phone, "live")
    expect(laptop.locator("#device-list li")).to_have_count(3)

    laptop.get_by_role("button", name="Sign out all other devices").click()
    laptop.get_by_role("button", name="Sign them out").click()
    expect(phone.get_by_role("heading", name="Sign in")).to_be_visible(timeout=SECOND)
    expect(laptop.locator("#device-list li")).to_have_count(1)
    expect_state(laptop, "live")
