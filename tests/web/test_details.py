"""Details a new user notices on the page and the GraphQL explorer: a typed ``#tag`` becomes a
tag, neutral buttons stay neutral on hover, one "Sign out" for this device, the status pill
centred, and the explorer's schema pane whole at desktop width."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.web.support import Cluster, Server

if not os.environ.get("CI"):  # in CI a missing Playwright is an error, not a skip
    pytest.importorskip("playwright", reason="Playwright is not installed")
from playwright.sync_api import expect

from tests.web.browsing import PASSWORD, Pages, device_row, expect_state, todo

DESKTOP = {"viewport": {"width": 1280, "height": 800}}


def test_a_hash_word_in_a_new_todo_is_a_tag(pages: Pages, cluster: Cluster) -> None:
    email = cluster.register(PASSWORD)
    page = pages.open(cluster.a.url, login=cluster.login(email, PASSWORD, "laptop"))
    expect_state(page, "live")
    field = page.get_by_label("New todo")
    for typed in ("buy milk #shop #errands #shop", "#later"):
        field.fill(typed)
        field.press("Enter")
    expect(todo(page, "buy milk")).to_be_visible()
    row = page.locator("#todo-list li").filter(has=todo(page, "buy milk"))
    expect(row.locator(".tag")).to_have_text(["#shop", "#errands"])
    expect(todo(page, "#later")).to_be_visible()  # tags only: kept as the title
    server = Server(cluster, email, PASSWORD)
    server.wait_until(lambda todos: len(todos) == 2)
    assert [(t["title"], t["tags"]) for t in server.todos()[1]] == [
        ("buy milk", ["shop", "errands"]), ("#later", [])]


def test_neutral_buttons_one_sign_out_and_a_centred_status(pages: Pages, cluster: Cluster) -> None:
    email = cluster.register(PASSWORD, device="Tablet")
    page = pages.open(cluster.a.url, login=cluster.login(email, PASSWORD, "Desktop"), **DESKTOP)
    expect_state(page, "live")
    expect(device_row(page, "Tablet")).to_be_visible()

    # This device signs out with the header's button only; other devices have their own.
    expect(page.get_by_role("button", name="Sign out", exact=True)).to_have_count(1)
    expect(device_row(page, "Desktop").get_by_role("button")).to_have_count(0)
    expect(device_row(page, "Tablet").get_by_role("button", name="Sign out “Tablet”")).to_be_visible()

    danger = page.evaluate("getComputedStyle(document.body).getPropertyValue('--danger')").strip()
    for name in ("Keyboard shortcuts", "Sign out “Tablet”", "Sign out", "Clear completed"):
        button = page.get_by_role("button", name=name, exact=True)
        button.hover()
        colours = button.evaluate("(b) => [getComputedStyle(b).color, getComputedStyle(b).borderColor]")
        red = page.evaluate("(c) => { const s = document.createElement('span'); s.style.color = c;"
                            " document.body.append(s); const v = getComputedStyle(s).color; s.remove();"
                            " return v; }", danger)
        assert red not in colours, (name, colours)

    # "Live" in the fixed-width pill: as much room on its right as on its left.
    gaps = page.evaluate("""() => {
      const pill = document.querySelector('#status').getBoundingClientRect();
      const parts = [...document.querySelector('#status').children].map((e) => e.getBoundingClientRect());
      const left = Math.min(...parts.map((r) => r.left)), right = Math.max(...parts.map((r) => r.right));
      return [left - pill.left, pill.right - right];
    }""")
    assert abs(gaps[0] - gaps[1]) <= 2, gaps


def test_the_graphql_explorer_shows_the_whole_schema_at_desktop_width(
        pages: Pages, cluster: Cluster, artifacts: Path) -> None:
    context = pages.browser.new_context(base_url=cluster.a.url, **DESKTOP)
    pages.contexts.append(context)
    page = context.new_page()
    page.goto("/graphql")
    expect(page.locator("#schema")).to_contain_text("type Query")
    pane = page.evaluate("""() => { const s = document.getElementById('schema');
      const r = s.getBoundingClientRect();
      return {right: r.right, width: innerWidth, scroll: s.scrollWidth, client: s.clientWidth}; }""")
    assert pane["right"] <= pane["width"], pane
    assert pane["scroll"] <= pane["client"], pane  # no line runs out of the pane
    page.screenshot(path=artifacts / "graphql-explorer-desktop.png")
