"""Real nursery instances inside a test's trio run, and small HTTP/websocket helpers.

``start_instance`` runs ``nursery.server.serve`` (its own asyncio thread for the store's
driver, store pool and broker connection, the edge listening on a free port) in the caller's
nursery, so several instances can share one test, one database and one Redis, like a real
deployment.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

from nursery.config import Settings
from nursery.server import Lifecycle, serve

SECRET = "test-secret-key-of-32-characters-at-least"
# Tests register and log in many users from 127.0.0.1: rate limits are opt-in per test.
UNLIMITED = {
    "login_rate_per_account": "100000/1",
    "login_rate_per_client": "100000/1",
    "register_rate_per_client": "100000/1",
    "write_rate_per_user": "100000/1",
}


@dataclass
class Instance:
    name: str
    url: str
    lifecycle: Lifecycle
    cancel_scope: trio.CancelScope
    settings: Settings

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/ws"

    def stop(self) -> None:
        """Graceful shutdown, as on SIGTERM."""
        self.lifecycle.request_stop()

    def crash(self) -> None:
        """Gone at once, as on kill -9: no close frames, no cleanup of presence."""
        self.cancel_scope.cancel()


async def start_instance(
    nursery: trio.Nursery, database_url: str, *, redis_url: str | None = None, **overrides: Any
) -> Instance:
    name = overrides.pop("instance_name", f"test-{uuid.uuid4().hex[:6]}")
    settings = Settings(
        port=0,
        database_url=database_url,
        redis_url=redis_url,
        secret_key=SECRET,
        instance_name=name,
        shutdown_timeout=5.0,
        **{**UNLIMITED, **overrides},
    )
    lifecycle = Lifecycle()

    async def run(task_status: trio.TaskStatus[tuple[list[str], trio.CancelScope]]) -> None:
        with trio.CancelScope() as scope:
            await serve(settings, lifecycle, task_status=_Relay(task_status, scope))

    binds, scope = await nursery.start(run)
    return Instance(name, binds[0], lifecycle, scope, settings)


@dataclass
class _Relay:
    """Passes the instance's cancel scope along with its bound addresses."""

    outer: Any
    scope: trio.CancelScope

    def started(self, binds: list[str]) -> None:
        self.outer.started((binds, self.scope))


@dataclass
class User:
    """A registered user with one HTTP client per device."""

    email: str
    password: str
    token: str
    session_id: str
    user_id: str
    headers: dict[str, str] = field(default_factory=dict)


async def register(client: httpx.AsyncClient, base: str, device: str = "laptop") -> User:
    email = f"{uuid.uuid4().hex[:10]}@example.com"
    password = "correct horse battery"
    r = await client.post(f"{base}/api/auth/register", json={"email": email, "password": password, "device": device})
    assert r.status_code == 201, r.text
    body = r.json()
    return User(email, password, body["token"], body["session"]["id"], body["user"]["id"],
                {"Authorization": f"Bearer {body['token']}"})


async def login(client: httpx.AsyncClient, base: str, user: User, device: str) -> User:
    r = await client.post(f"{base}/api/auth/login", json={"email": user.email, "password": user.password, "device": device})
    assert r.status_code == 200, r.text
    body = r.json()
    return User(user.email, user.password, body["token"], body["session"]["id"], user.user_id,
                {"Authorization": f"Bearer {body['token']}"})


async def hello(ws: WebSocketConnection, token: str, since: int | None) -> dict[str, Any]:
    await ws.send_message(json.dumps({"type": "hello", "token": token, "since": since}))
    welcome = json.loads(await ws.get_message())
    assert welcome["type"] == "welcome", welcome
    return welcome


async def next_of_type(ws: WebSocketConnection, kind: str, timeout: float = 5) -> dict[str, Any]:
    """The next frame of type ``kind``, skipping others (presence, session, ping)."""
    with trio.fail_after(timeout):
        while True:
            frame = json.loads(await ws.get_message())
            if frame["type"] == kind:
                return frame


__all__ = ["Instance", "User", "hello", "login", "next_of_type", "open_websocket_url", "register", "start_instance"]
