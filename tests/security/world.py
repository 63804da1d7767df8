"""A small world to attack: two instances on one database, a victim with todos and devices,
an attacker with an account of their own, and every kind of credential that must not work.

- ``main``: default settings. ``short``: ``token_max_age=1`` on the same database, so a token
  ``main`` issued two seconds ago is expired there and still good on ``main`` (the control).
- ``victim``: todos with unique titles, a second device, one device revoked from another,
  one that logged out, a todo created with an Idempotency-Key.
- ``attacker``: a user of their own, with one todo.
- ``markers``: every string that identifies the victim's data (ids, titles, email, tokens):
  none may appear in anything the attacker or a bad credential is answered.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import trio
from itsdangerous import URLSafeTimedSerializer
from trio_websocket import ConnectionClosed, WebSocketConnection

from tests.harness import Instance, User, login, register, start_instance

KINDS = ["none", "malformed", "tampered", "foreign_secret", "revoked", "logged_out", "expired"]
TOKEN_SALT = "nursery.session"  # what nursery.service.tokens signs with


@dataclass
class Credential:
    """One way of (not) authenticating: the Authorization headers to try (REST, GraphQL),
    the tokens to try (``None``: none given) on the websockets, and the instance to ask."""

    kind: str
    headers: list[dict[str, str]]
    tokens: list[str | None]
    instance: Instance


@dataclass
class World:
    main: Instance
    short: Instance
    client: httpx.AsyncClient
    victim: User
    victim_device: User  # a second live device of the victim
    attacker: User
    victim_todos: list[dict[str, Any]]
    attacker_todo: dict[str, Any]
    revoked: User
    logged_out: User
    victim_cursor: str
    idempotency_key: str
    markers: set[str] = field(default_factory=set)
    token_issued_at: float = 0.0

    async def credential(self, kind: str) -> Credential:
        token = self.victim.token
        if kind == "none":
            return Credential(kind, [{}], [None], self.main)
        if kind == "malformed":
            headers = ["Bearer", "Bearer not-a-token", "Bearer a.b.c", f"Basic {token}",
                       f"Token {token}", f"Bearer {token[:-8]}", f"Bearer {token} {token}",
                       "Bearer " + "x" * 5000]
            tokens: list[str | None] = ["", "not-a-token", "a.b.c", token[:-8], "x" * 5000]
            return Credential(kind, [{"Authorization": h} for h in headers], tokens, self.main)
        if kind == "tampered":
            payload, _, signature = token.rpartition(".")
            flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
            return _bearer(kind, f"{payload}.{flipped}", self.main)
        if kind == "foreign_secret":
            forged = URLSafeTimedSerializer("another secret", salt=TOKEN_SALT).dumps(self.victim.session_id)
            return _bearer(kind, forged, self.main)
        if kind == "revoked":
            return _bearer(kind, self.revoked.token, self.main)
        if kind == "logged_out":
            return _bearer(kind, self.logged_out.token, self.main)
        if kind == "expired":
            # itsdangerous counts whole seconds: older than 1 s means 2 s by the clock.
            while int(time.time()) < int(self.token_issued_at) + 2:
                await trio.sleep(0.05)
            return _bearer(kind, token, self.short)
        raise ValueError(kind)

    async def victim_state(self) -> tuple[list[dict[str, Any]], list[str]]:
        """The victim's todos and live session ids, as the victim sees them."""
        r = await self.client.get(f"{self.main.url}/api/todos", params={"limit": 200}, headers=self.victim.headers)
        assert r.status_code == 200, r.text
        s = await self.client.get(f"{self.main.url}/api/sessions", headers=self.victim.headers)
        assert s.status_code == 200, s.text
        return r.json()["items"], sorted(x["id"] for x in s.json()["sessions"])


def _bearer(kind: str, token: str, instance: Instance) -> Credential:
    return Credential(kind, [{"Authorization": f"Bearer {token}"}], [token], instance)


async def build_world(nursery: trio.Nursery, database_url: str, client: httpx.AsyncClient) -> World:
    main = await start_instance(nursery, database_url)
    short = await start_instance(nursery, database_url, token_max_age=1)
    base = main.url
    victim = await register(client, base, "victim laptop")
    issued_at = time.time()  # no earlier than the victim's token's timestamp
    victim_device = await login(client, base, victim, "victim phone")
    revoked = await login(client, base, victim, "victim stolen tablet")
    logged_out = await login(client, base, victim, "victim old desktop")
    attacker = await register(client, base, "attacker laptop")
    assert (await client.delete(f"{base}/api/sessions/{revoked.session_id}", headers=victim.headers)).status_code == 204
    assert (await client.post(f"{base}/api/auth/logout", headers=logged_out.headers)).status_code == 204

    secret = uuid.uuid4().hex[:12]
    idempotency_key = f"victim-key-{secret}"
    todos = []
    for index in range(3):
        headers = {**victim.headers, **({"Idempotency-Key": idempotency_key} if index == 0 else {})}
        r = await client.post(f"{base}/api/todos", headers=headers, json={
            "title": f"victim title {secret} {index}", "notes": f"victim notes {secret}",
            "tags": [f"victim-tag-{secret}"]})
        assert r.status_code == 201, r.text
        todos.append(r.json()["todo"])
    r = await client.delete(f"{base}/api/todos/{todos[2]['id']}", headers=victim.headers)  # a tombstone
    assert r.status_code == 204
    r = await client.post(f"{base}/api/todos", json={"title": "attacker's own"}, headers=attacker.headers)
    assert r.status_code == 201, r.text
    attacker_todo = r.json()["todo"]
    r = await client.get(f"{base}/api/todos", params={"limit": 1}, headers=victim.headers)
    cursor = r.json()["next_cursor"]
    assert cursor

    markers = {victim.email, victim.user_id, secret, idempotency_key, cursor}
    markers |= {u.session_id for u in (victim, victim_device, revoked, logged_out)}
    markers |= {u.token for u in (victim, victim_device, revoked, logged_out)}
    markers |= {t["id"] for t in todos}
    return World(main, short, client, victim, victim_device, attacker, todos, attacker_todo,
                 revoked, logged_out, cursor, idempotency_key, markers, issued_at)


def leaks(text: str, markers: set[str]) -> list[str]:
    """The markers found in ``text``, and any sign of a stack trace or a driver."""
    found = [m for m in markers if m and m in text]
    found += [m for m in ("Traceback", 'File "', "asyncpg", "psycopg", "site-packages") if m in text]
    return found


async def closed_with(ws: WebSocketConnection, timeout: float = 5) -> tuple[int | None, list[str]]:
    """Read until the server closes the socket: its close code, and what it sent before."""
    received: list[str] = []
    with trio.fail_after(timeout):
        try:
            while True:
                message = await ws.get_message()
                received.append(message if isinstance(message, str) else repr(message))
        except ConnectionClosed as closed:
            return (closed.reason.code if closed.reason else None), received


def frame(body: dict[str, Any]) -> str:
    return json.dumps(body)
