"""``nursery watch``: log in and print the user's todos live, the whole list again on every change.

Plain text lines, fit for a terminal or a pipe. A burst of changes (a backlog after a
reconnect) is drawn once: redraws are at most one per ``REDRAW_INTERVAL``.
"""

from __future__ import annotations

import getpass
import os
import sys
from typing import Any, NoReturn, TextIO

import httpx
import trio

from nursery.client import ClientConfig, ClientError, SyncClient, login

REDRAW_INTERVAL = 0.1
QUIET = frozenset({"ping", "pong"})  # frames that change nothing on screen


def render(client: SyncClient, status: str = "") -> str:
    """The screen for the client's current state: a header line, then one line per todo."""
    mirror = client.mirror
    where = f"connected to {client.instance}" if client.connected else "disconnected"
    online = f" · {len(client.presence)} device(s) online" if client.connected else ""
    lines = [f"── {len(mirror.todos)} todo(s) · rev {mirror.rev} · {where}{online} ──"]
    for todo in sorted(mirror.todos.values(), key=lambda t: (t.get("created_at") or "", t["id"])):
        lines.append(_line(todo))
    if status:
        lines.append(f"({status})")
    return "\n".join(lines) + "\n\n"


def _line(todo: dict[str, Any]) -> str:
    text = f"[{'x' if todo.get('done') else ' '}] {todo.get('title', '')}"
    tags = todo.get("tags") or []
    if tags:
        text += "  " + " ".join(f"#{tag}" for tag in tags)
    if todo.get("due"):
        text += f"  (due {todo['due']})"
    return text


class _Screen:
    """What to draw next; ``dirty`` is set by the client's events, cleared by the drawer."""

    def __init__(self) -> None:
        self.dirty = trio.Event()
        self.status = ""

    def on_event(self, frame: dict[str, Any]) -> None:
        if frame["type"] in QUIET:
            return
        if frame["type"] == "disconnected":
            self.status = f"{frame['reason']}; reconnecting in {frame['retry_in']:.1f} s"
        elif frame["type"] == "welcome":
            self.status = ""
        self.dirty.set()


async def _draw(client: SyncClient, screen: _Screen, out: TextIO) -> NoReturn:
    while True:
        await screen.dirty.wait()
        screen.dirty = trio.Event()
        out.write(render(client, screen.status))
        out.flush()
        await trio.sleep(REDRAW_INTERVAL)


async def watch(
    url: str,
    email: str,
    password: str,
    out: TextIO = sys.stdout,
    *,
    device: str = "nursery watch",
    config: ClientConfig = ClientConfig(),
) -> None:
    """Log in as a new device and print the todos live until cancelled.

    Raises ``RequestFailed`` if the login is refused, ``SessionEnded`` once the session is
    revoked (the last screen is printed first). Owns the sync client's task and the drawer;
    cancellation stops both.
    """
    token = await login(url, email, password, device=device)
    screen = _Screen()
    client = SyncClient(url, token, on_event=screen.on_event, config=config)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_draw, client, screen, out)
        try:
            await client.run()  # returns only by raising
        except ClientError as exc:  # caught in here so that it leaves the nursery unwrapped
            ended = exc
        nursery.cancel_scope.cancel()
    out.write(render(client, f"stopped: {ended}"))
    out.flush()
    raise ended


def main(url: str, email: str | None, password: str | None) -> int:
    """The command: ``email``/``password`` fall back to NURSERY_EMAIL / NURSERY_PASSWORD, then
    to a prompt on a terminal. Exit status 0 on Ctrl-C, 1 when the login fails or the session
    ends."""
    email = email or os.environ.get("NURSERY_EMAIL") or _ask("email: ", getpass_=False)
    password = password or os.environ.get("NURSERY_PASSWORD") or _ask("password: ", getpass_=True)
    if not email or not password:
        print("nursery watch: an email and a password are needed (flags or NURSERY_EMAIL / NURSERY_PASSWORD)", file=sys.stderr)
        return 1
    try:
        trio.run(watch, url, email, password)
    except BaseException as exc:
        if _find(exc, KeyboardInterrupt):
            return 0
        failure = _find(exc, ClientError) or _find(exc, httpx.TransportError)
        if failure is None:
            raise
        print(f"nursery watch: {failure}", file=sys.stderr)
        return 1
    return 0


def _ask(prompt: str, *, getpass_: bool) -> str | None:
    if not sys.stdin.isatty():
        return None
    return getpass.getpass(prompt) if getpass_ else input(prompt)


def _find(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """``exc`` or the first ``kind`` inside it (exception groups)."""
    if isinstance(exc, kind):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _find(inner, kind)
            if found is not None:
                return found
    return None
