"""Driving the page as a user would: pages (one browser context = one device) that record
console errors, and the few gestures every test repeats."""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path
from typing import Any

from playwright.sync_api import Page, expect

SECOND = 1000  # ms, Playwright's unit
PASSWORD = "correct horse battery"
DOCS = Path(__file__).resolve().parents[2] / "docs"
# Console messages that are not the page's fault: the browser reports a refused or cut
# connection itself while an instance is down; the page handles it.
EXPECTED_CONSOLE = re.compile(
    r"WebSocket connection to .* failed|net::ERR_CONNECTION_REFUSED"
    r"|net::ERR_INTERNET_DISCONNECTED"  # context.set_offline(True): the page copes
)
AXE = Path(__file__).with_name("vendor") / "axe-core" / "axe.min.js"
# What a row shows, as data: two pages show the same list when these are equal.
ROWS_JS = """() => [...document.querySelectorAll('#todo-list li')].map((li) => ({
  title: li.querySelector('.title').textContent,
  done: li.querySelector('.toggle').checked,
  details: li.querySelector('.details').textContent,
  pending: li.classList.contains('pending'),
}))"""


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




def rows(page: Page) -> list[dict[str, Any]]:
    """The list as the page shows it (see ROWS_JS)."""
    shown: list[dict[str, Any]] = page.evaluate(ROWS_JS)
    return shown


def expect_same_rows(page: Page, expected: list[dict[str, Any]], timeout: float) -> None:
    """Wait (at most ``timeout`` ms) until ``page`` shows exactly ``expected``. Polled, like
    Playwright's own ``expect`` (``wait_for_function`` would need eval, which the page's CSP
    forbids)."""
    deadline = time.monotonic() + timeout / 1000
    while (shown := rows(page)) != expected:
        if time.monotonic() > deadline:
            assert shown == expected, f"not the same within {timeout} ms"
        page.wait_for_timeout(20)


def edit_todo(page: Page, which: str, **fields: str) -> None:
    """Open the editor of the todo titled ``which``, fill ``fields`` (title, notes, due, tags)
    and save."""
    page.get_by_role("button", name=f"Edit “{which}”").click()
    dialog = page.get_by_role("dialog", name=f"Edit “{which}”")
    labels = {"title": "Title", "notes": "Notes", "due": "Due date", "tags": "Tags"}
    for field, value in fields.items():
        dialog.get_by_label(labels[field], exact=True).fill(value)
    dialog.get_by_role("button", name="Save").click()
    expect(dialog).to_be_hidden()


def pending_count(page: Page) -> Any:
    return page.locator("#pending")


def accessibility_violations(page: Page) -> list[dict[str, Any]]:
    """axe-core's serious and critical findings on the page as it is now (run through the
    DevTools protocol, which the page's CSP does not govern)."""
    page.evaluate(AXE.read_text())
    found: list[dict[str, Any]] = page.evaluate(
        """async () => (await axe.run(document, {resultTypes: ['violations']})).violations
             .filter((v) => ['serious', 'critical'].includes(v.impact))
             .map((v) => ({id: v.id, impact: v.impact, help: v.help,
                           nodes: v.nodes.map((n) => n.target.join(' ')).slice(0, 5)}))"""
    )
    return found
