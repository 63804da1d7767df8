"""``nursery watch``: log in and print the user's todos, then every change as it happens, one
line each (fit for a terminal, a pipe or a log file)::

    22:41:07  connecting to http://127.0.0.1:4000 as ada@example.com …
    22:41:07  2 todo(s) at rev 5
                [ ] buy milk  #shop
                [x] call mom
    22:41:07  connected to instance-2
    22:41:07  2 device(s) online
    22:41:12  rev 6  added    [ ] water the plants
    22:41:15  rev 7  changed  [x] water the plants
    22:41:20  rev 8  deleted  call mom
    22:41:31  disconnected (server restarting); reconnecting in 0.2 s
    22:41:31  connected to instance-1

After a reconnect only what changed meanwhile is printed (the client resumes from the last
revision it applied); after a ``reset`` (the server's history moved past ours) the whole list
is printed again.
"""

from __future__ import annotations

import getpass
import os
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

import httpx
import trio

from nursery.client import ClientConfig, ClientError, SyncClient, login
from nursery.client.errors import describe

INDENT = " " * 12  # under the text of a timestamped line


def todo_line(todo: dict[str, Any]) -> str:
    text = f"[{'x' if todo.get('done') else ' '}] {todo.get('title', '')}"
    tags = todo.get("tags") or []
    if tags:
        text += "  " + " ".join(f"#{tag}" for tag in tags)
    if todo.get("due"):
        text += f"  (due {todo['due']})"
    return text


class Lines:
    """Turns the sync client's events into lines on ``out`` (``on_event`` is the client's
    callback; ``client`` is set once the client exists). It remembers what it printed of each
    todo (``known``), so that a change reads as added or changed, and a delete names the title
    that went."""

    def __init__(self, out: TextIO, clock: Callable[[], str] = lambda: time.strftime("%H:%M:%S")) -> None:
        self.client: SyncClient | None = None
        self._out = out
        self._clock = clock
        self.known: dict[str, dict[str, Any]] = {}
        self._loads = 0
        self._online: int | None = None

    def say(self, text: str, *more: str) -> None:
        self._out.write(f"{self._clock()}  {text}\n" + "".join(f"{INDENT}{line}\n" for line in more))
        self._out.flush()

    def on_event(self, frame: dict[str, Any]) -> None:
        match frame["type"]:
            case "loaded":
                self._loaded(frame["rev"])
            case "welcome":
                self.say(f"connected to {frame.get('instance')}")
                self._online = None  # say the count again on this connection
            case "change":
                self._change(frame)
            case "disconnected":
                self.say(f"disconnected ({frame['reason']}); reconnecting in {frame['retry_in']:.1f} s")
            case "presence":
                online = len(frame.get("online") or [])
                if online != self._online:
                    self._online = online
                    self.say(f"{online} device(s) online")
            case "session":
                session = frame.get("session") or {}
                verb = {"created": "signed in", "revoked": "signed out"}.get(frame.get("op", ""))
                if verb:
                    self.say(f"device {session.get('device', '?')!r} {verb}")

    def _loaded(self, rev: int) -> None:
        assert self.client is not None
        todos = sorted(self.client.mirror.todos.values(),
                       key=lambda t: (t.get("created_at") or "", t["id"]))
        title = f"{len(todos)} todo(s) at rev {rev}"
        if self._loads:
            title = f"reset by the server: the list again, {title}"
        self._loads += 1
        self.say(title, *(todo_line(t) for t in todos))
        self.known = {t["id"]: t for t in todos}

    def _change(self, frame: dict[str, Any]) -> None:
        rev = frame.get("rev")
        if frame.get("op") == "upsert":
            todo = frame["todo"]
            verb = "changed" if todo["id"] in self.known else "added  "
            self.known[todo["id"]] = todo
            self.say(f"rev {rev}  {verb}  {todo_line(todo)}")
        else:
            gone = self.known.pop(frame.get("id", ""), None)
            self.say(f"rev {rev}  deleted  {gone.get('title', '') if gone else frame.get('id')}")


DEFAULT_CONFIG = ClientConfig()


async def watch(
    url: str,
    email: str,
    password: str,
    out: TextIO = sys.stdout,
    *,
    device: str = "nursery watch",
    config: ClientConfig = DEFAULT_CONFIG,
) -> None:
    """Log in as a new device and print the todos, then each change, until cancelled.

    Raises ``RequestFailed`` if the login is refused, ``SessionEnded`` once the session is
    revoked (a last line says so first). Owns the sync client's task; cancellation stops it.
    """
    lines = Lines(out)
    lines.say(f"connecting to {url} as {email} …")
    token = await login(url, email, password, device=device)
    lines.client = SyncClient(url, token, on_event=lines.on_event, config=config)
    try:
        await lines.client.run()  # returns only by raising
    except ClientError as exc:
        lines.say(f"stopped: {exc}")
        raise


def main(url: str, email: str | None, password: str | None) -> int:
    """The command: ``email``/``password`` fall back to NURSERY_EMAIL / NURSERY_PASSWORD, then
    to a prompt on a terminal. Exit status 0 on Ctrl-C while watching, 130 on Ctrl-C at a
    prompt, 1 when the login fails, the server cannot be reached or the session ends (one line
    on stderr each, never a traceback)."""
    try:
        email = email or os.environ.get("NURSERY_EMAIL") or _ask("email: ", getpass_=False)
        password = password or os.environ.get("NURSERY_PASSWORD") or _ask("password: ", getpass_=True)
    except KeyboardInterrupt:
        print("\nnursery watch: interrupted", file=sys.stderr)
        return 130
    except EOFError:
        print("\nnursery watch: no input: an email and a password are needed", file=sys.stderr)
        return 1
    if not email or not password:
        print("nursery watch: an email and a password are needed"
              " (flags or NURSERY_EMAIL / NURSERY_PASSWORD)", file=sys.stderr)
        return 1
    try:
        trio.run(watch, url, email, password)
    except BaseException as exc:
        if _find(exc, KeyboardInterrupt):
            return 0
        failure = _find(exc, ClientError)
        if failure is not None:
            print(f"nursery watch: {failure}", file=sys.stderr)
            return 1
        unreachable = _find(exc, httpx.TransportError)
        if unreachable is None:
            raise
        print(f"nursery watch: cannot reach {url}: {describe(unreachable)}", file=sys.stderr)
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
