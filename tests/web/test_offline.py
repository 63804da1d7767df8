"""Offline first, in headless Chromium: writes made offline survive a reload, reach the
server once each when the network returns (also after the server restarted meanwhile), and
a conflicting edit is shown and settled by the user.

"Converges within 1 s" is counted from the moment the offline page is put back online: the
other device, live on the other instance, must then show exactly the same rows
(``browsing.ROWS_JS``: titles, done, due day, tags, notes) within 1 s, and the server must
hold exactly those todos, at the revision the writes add up to (each applied once).
"""

from __future__ import annotations

import os
import re

import pytest

from tests.web.support import Cluster, Server

if not os.environ.get("CI"):  # in CI a missing Playwright is an error, not a skip
    pytest.importorskip("playwright", reason="Playwright is not installed")
from playwright.sync_api import Page, expect

from tests.web.browsing import (
    PASSWORD,
    SECOND,
    Pages,
    edit_todo,
    expect_same_rows,
    expect_state,
    pending_count,
    rows,
    todo,
)


def devices(pages: Pages, cluster: Cluster) -> tuple[Page, Page, Server]:
    """A laptop on instance a and a phone on instance b, one user, both live."""
    pages.allow("the server responded with a status of 409")  # conflicts are expected here
    email = cluster.register(PASSWORD)
    server = Server(cluster, email, PASSWORD)
    laptop = pages.open(cluster.a.url, login=cluster.login(email, PASSWORD, "laptop"))
    phone = pages.open(cluster.b.url, login=cluster.login(email, PASSWORD, "phone"))
    expect_state(laptop, "live")
    expect_state(phone, "live")
    return laptop, phone, server


def write_offline(laptop: Page) -> None:
    """Add, edit (every field), toggle and delete, offline: all shown at once, all pending."""
    laptop.context.set_offline(True)
    expect_state(laptop, "offline", timeout=2 * SECOND)
    field = laptop.get_by_label("New todo")
    field.fill("added offline")
    field.press("Enter")
    expect(todo(laptop, "added offline")).to_be_visible()
    edit_todo(laptop, "added offline", notes="made on the train")  # an edit of an unsent todo
    edit_todo(laptop, "edit me", title="edited offline", notes="two\nlines", due="2026-12-24",
              tags="home, gifts")
    todo(laptop, "toggle me").check()
    laptop.get_by_role("button", name="Delete “delete me”").click()
    expect(todo(laptop, "delete me")).to_have_count(0)
    expect(pending_count(laptop)).to_have_text("5 changes not synced")
    expect(laptop.locator("#todo-list li.pending")).to_have_count(3)  # added, edited, toggled
    expect(todo(laptop, "untouched")).to_be_visible()


def test_offline_writes_survive_a_reload_and_reach_the_server_once(
    pages: Pages, cluster: Cluster
) -> None:
    laptop, phone, server = devices(pages, cluster)
    for title in ["untouched", "edit me", "toggle me", "delete me"]:
        server.create(title)
    expect(laptop.locator("#todo-list li")).to_have_count(4, timeout=SECOND)
    head, _ = server.todos()

    write_offline(laptop)
    shown = rows(laptop)
    assert server.titles() == {t: False for t in ["untouched", "edit me", "toggle me", "delete me"]}

    # A reload while offline: the service worker serves the page, IndexedDB the list and
    # the writes not sent yet; the page does not ask the server for a snapshot.
    snapshots: list[str] = []
    laptop.on("request", lambda r: snapshots.append(r.url) if "/api/todos?" in r.url else None)
    laptop.reload()
    expect_same_rows(laptop, shown, timeout=SECOND)
    expect(pending_count(laptop)).to_have_text("5 changes not synced")
    expect_state(laptop, "offline")

    laptop.context.set_offline(False)
    expect(pending_count(laptop)).to_have_text("", timeout=SECOND)
    done = [{**row, "pending": False} for row in shown]
    expect_same_rows(laptop, done, timeout=SECOND)
    expect_same_rows(phone, done, timeout=SECOND)

    rev, todos = server.todos()
    assert [(t["title"], t["done"]) for t in todos] == [
        ("untouched", False), ("edited offline", False), ("toggle me", True),
        ("added offline", False),
    ]
    edited = todos[1]
    assert (edited["notes"], edited["due"], edited["tags"]) == (
        "two\nlines", "2026-12-24T00:00:00Z", ["home", "gifts"])
    assert todos[3]["notes"] == "made on the train"
    assert rev == head + 5  # five writes, each applied once
    assert snapshots == []  # resumed from the stored revision
    expect_state(laptop, "live")


def test_offline_writes_reach_a_server_restarted_meanwhile(
    pages: Pages, cluster: Cluster
) -> None:
    laptop, phone, server = devices(pages, cluster)
    for title in ["untouched", "edit me", "toggle me", "delete me"]:
        server.create(title)
    expect(laptop.locator("#todo-list li")).to_have_count(4, timeout=SECOND)
    head, _ = server.todos()

    write_offline(laptop)
    shown = rows(laptop)
    assert cluster.a.stop() == 0  # the laptop's instance goes, and comes back
    cluster.a.start()
    cluster.a.wait_ready()
    laptop.reload()
    expect_same_rows(laptop, shown, timeout=SECOND)

    laptop.context.set_offline(False)
    done = [{**row, "pending": False} for row in shown]
    expect_same_rows(phone, done, timeout=SECOND)
    expect_same_rows(laptop, done, timeout=SECOND)
    rev, _ = server.todos()
    assert server.titles() == {"untouched": False, "edited offline": False, "toggle me": True,
                               "added offline": False}
    assert rev == head + 5
    expect_state(laptop, "live", timeout=5 * SECOND)


def test_a_conflicting_edit_is_shown_and_either_choice_converges(
    pages: Pages, cluster: Cluster
) -> None:
    laptop, phone, server = devices(pages, cluster)
    for title in ["mine wins", "theirs wins", "no clash"]:
        server.create(title)
    expect(laptop.locator("#todo-list li")).to_have_count(3, timeout=SECOND)

    laptop.context.set_offline(True)
    expect_state(laptop, "offline", timeout=2 * SECOND)
    edit_todo(laptop, "mine wins", title="mine wins: laptop")
    edit_todo(laptop, "theirs wins", notes="laptop's notes")
    edit_todo(laptop, "no clash", title="no clash: laptop")
    edit_todo(phone, "mine wins", title="mine wins: phone")
    edit_todo(phone, "theirs wins", notes="phone's notes")
    todo(phone, "no clash").check()  # another field than the laptop's edit: no conflict
    server.wait_until(lambda todos: [(t["title"], t["notes"], t["done"]) for t in todos] == [
        ("mine wins: phone", "", False), ("theirs wins", "phone's notes", False),
        ("no clash", "", True)])

    laptop.context.set_offline(False)
    conflicts = laptop.locator("#todo-list .conflict:not([hidden])")
    expect(conflicts).to_have_count(2, timeout=2 * SECOND)
    mine = laptop.locator("#todo-list li").filter(has=todo(laptop, "mine wins: phone"))
    expect(mine.locator(".conflict")).to_contain_text(
        "title: yours “mine wins: laptop”, theirs “mine wins: phone”")
    theirs = laptop.locator("#todo-list li").filter(has=todo(laptop, "theirs wins"))
    expect(theirs.locator(".conflict")).to_contain_text(
        "notes: yours “laptop's notes”, theirs “phone's notes”")
    expect(pending_count(laptop)).to_have_text("2 changes not synced")
    # The edit that clashed with nothing went through, on top of the phone's toggle.
    expect(todo(phone, "no clash: laptop")).to_be_checked(timeout=SECOND)

    mine.get_by_role("button", name="Keep mine").click()
    expect(todo(phone, "mine wins: laptop")).to_be_visible(timeout=SECOND)
    theirs.get_by_role("button", name="Take theirs").click()
    expect(conflicts).to_have_count(0)
    expect(pending_count(laptop)).to_have_text("")
    expect_same_rows(phone, rows(laptop), timeout=SECOND)
    _, todos = server.todos()
    assert [(t["title"], t["notes"], t["done"]) for t in todos] == [
        ("mine wins: laptop", "", False), ("theirs wins", "phone's notes", False),
        ("no clash: laptop", "", True),
    ]


def test_a_write_refused_for_good_is_rolled_back_with_a_message(
    pages: Pages, cluster: Cluster
) -> None:
    laptop, phone, server = devices(pages, cluster)
    server.create("deleted elsewhere")
    server.create("too many tags")
    expect(laptop.locator("#todo-list li")).to_have_count(2, timeout=SECOND)

    # 404: edited offline here, deleted on the phone meanwhile.
    pages.allow("the server responded with a status of 404")
    laptop.context.set_offline(True)
    expect_state(laptop, "offline", timeout=2 * SECOND)
    edit_todo(laptop, "deleted elsewhere", title="edited here")
    phone.get_by_role("button", name="Delete “deleted elsewhere”").click()
    server.wait_until(lambda todos: "deleted elsewhere" not in {t["title"] for t in todos})
    laptop.context.set_offline(False)
    expect(laptop.locator("#alert")).to_have_text(
        "“edited here” was deleted on another device. Your change was undone.", timeout=2 * SECOND)
    expect(todo(laptop, "edited here")).to_have_count(0)

    # 422: the server allows 20 tags; the page shows the 21 at once, then takes them back.
    pages.allow("the server responded with a status of 422")
    edit_todo(laptop, "too many tags", tags=", ".join(f"t{i}" for i in range(21)))
    expect(laptop.locator("#alert")).to_contain_text(
        "“too many tags” could not be saved (tags:", timeout=2 * SECOND)
    row = laptop.locator("#todo-list li").filter(has=todo(laptop, "too many tags"))
    expect(row.locator(".tag")).to_have_count(0)
    expect(pending_count(laptop)).to_have_text("")
    assert server.titles() == {"too many tags": False}
    assert re.fullmatch(r"1 of 1 left", laptop.locator("#count").inner_text())
