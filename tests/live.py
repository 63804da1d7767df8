"""A test device: one websocket to one instance, and the mirror of the user's todos it keeps.

Deliberately independent of ``nursery.client`` (which has its own tests): these tests check
the server's guarantee with the simplest possible client, and record every frame they get.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import httpx
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url


@dataclass
class Device:
    token: str
    rev: int = 0
    todos: dict[str, dict[str, Any]] = field(default_factory=dict)
    revs_seen: list[int] = field(default_factory=list)
    close_code: int | None = None
    ws: WebSocketConnection | None = None
    instance: str = ""

    def apply(self, frame: dict[str, Any]) -> None:
        assert frame["rev"] > self.rev, f"revision {frame['rev']} after {self.rev}"
        self.revs_seen.append(frame["rev"])
        self.rev = frame["rev"]
        if frame["op"] == "upsert":
            self.todos[frame["todo"]["id"]] = frame["todo"]
        else:
            self.todos.pop(frame["id"], None)

    async def run(self, ws_url: str, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, resume from ``self.rev``, apply frames until the socket closes."""
        async with open_websocket_url(ws_url, message_queue_size=1) as ws:
            self.ws = ws
            await ws.send_message(json.dumps({"type": "hello", "token": self.token, "since": self.rev}))
            try:
                welcome = json.loads(await ws.get_message())
                assert welcome["type"] == "welcome", welcome
                self.instance = welcome["instance"]
                task_status.started()
                while True:
                    frame = json.loads(await ws.get_message())
                    if frame["type"] == "change":
                        self.apply(frame)
                    elif frame["type"] == "ping":
                        await ws.send_message('{"type":"pong"}')
                    elif frame["type"] == "reset":
                        raise AssertionError("unexpected reset")
            except ConnectionClosed as closed:
                self.close_code = closed.reason.code
            finally:
                self.ws = None

    async def wait_for_rev(self, rev: int, timeout: float = 10) -> None:
        with trio.fail_after(timeout):
            while self.rev < rev:
                await trio.sleep(0.01)


async def server_state(client: httpx.AsyncClient, base: str, headers: dict[str, str]) -> tuple[dict[str, dict[str, Any]], int]:
    """Every todo of the user (all pages) and the revision of the first page."""
    todos: dict[str, dict[str, Any]] = {}
    cursor, first_rev = None, None
    while True:
        params = {"limit": "200", **({"cursor": cursor} if cursor else {})}
        r = await client.get(f"{base}/api/todos", params=params, headers=headers)
        assert r.status_code == 200, r.text
        body = r.json()
        first_rev = body["rev"] if first_rev is None else first_rev
        todos.update({t["id"]: t for t in body["items"]})
        cursor = body["next_cursor"]
        if cursor is None:
            return todos, first_rev
