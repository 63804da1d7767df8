"""Helpers for the GraphQL tests: POST a document, read data or errors, speak
``graphql-transport-ws``."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import trio
from trio_websocket import WebSocketConnection

from tests.api.support import Api
from tests.harness import User

PASSWORD = "correct horse battery"
SUBPROTOCOL = "graphql-transport-ws"

USER_FIELDS = "id email createdAt"
SESSION_FIELDS = "id device createdAt lastSeenAt current online"
TODO_FIELDS = "id title notes done due tags rev createdAt updatedAt"
AUTH_FIELDS = f"user {{ {USER_FIELDS} }} session {{ {SESSION_FIELDS} }} token"


def new_email() -> str:
    return f"{uuid.uuid4().hex[:10]}@example.com"


def rest_todo(todo: dict[str, Any]) -> dict[str, Any]:
    """A GraphQL todo (``TODO_FIELDS``) in REST's shape, to compare the two."""
    return {
        "id": todo["id"], "title": todo["title"], "notes": todo["notes"], "done": todo["done"],
        "due": todo["due"], "tags": todo["tags"], "rev": todo["rev"],
        "created_at": todo["createdAt"], "updated_at": todo["updatedAt"],
    }


@dataclass
class Gql:
    """GraphQL over HTTP against one instance (``api``)."""

    api: Api

    async def post(self, query: str, variables: dict[str, Any] | None = None,
                   user: User | None = None, *, status: int = 200,
                   headers: dict[str, str] | None = None) -> dict[str, Any]:
        r = await self.api.client.post(
            "/graphql", json={"query": query, "variables": variables or {}},
            headers={**(user.headers if user else {}), **(headers or {})},
        )
        assert r.status_code == status, (r.status_code, r.text)
        assert r.headers["content-type"].startswith("application/json"), r.headers
        body: dict[str, Any] = r.json()
        assert_no_leak(r.text)
        return body

    async def data(self, query: str, variables: dict[str, Any] | None = None,
                   user: User | None = None) -> dict[str, Any]:
        body = await self.post(query, variables, user)
        assert "errors" not in body, body
        data: dict[str, Any] = body["data"]
        return data

    async def error(self, query: str, variables: dict[str, Any] | None = None,
                    user: User | None = None, *, code: str | None = None) -> dict[str, Any]:
        """The one error of a response; its code is checked when given."""
        body = await self.post(query, variables, user)
        errors = body.get("errors")
        assert errors and len(errors) == 1, body
        error: dict[str, Any] = errors[0]
        assert isinstance(error["message"], str) and error["message"], error
        if code is not None:
            assert error["extensions"]["code"] == code, error
        return error

    async def register(self, device: str = "laptop") -> User:
        data = await self.data(
            f"mutation($input: CredentialsInput!) {{ register(input: $input) {{ {AUTH_FIELDS} }} }}",
            {"input": {"email": new_email(), "password": PASSWORD, "device": device}},
        )
        return as_user(data["register"], PASSWORD)

    async def login(self, user: User, device: str) -> User:
        data = await self.data(
            f"mutation($input: CredentialsInput!) {{ login(input: $input) {{ {AUTH_FIELDS} }} }}",
            {"input": {"email": user.email, "password": user.password, "device": device}},
        )
        return as_user(data["login"], user.password)

    async def create(self, user: User, title: str = "a todo", **fields: Any) -> dict[str, Any]:
        data = await self.data(
            f"mutation($input: NewTodoInput!) {{ createTodo(input: $input) {{ {TODO_FIELDS} }} }}",
            {"input": {"title": title, **fields}}, user,
        )
        todo: dict[str, Any] = data["createTodo"]
        return todo


def as_user(payload: dict[str, Any], password: str) -> User:
    token = payload["token"]
    return User(payload["user"]["email"], password, token, payload["session"]["id"],
                payload["user"]["id"], {"Authorization": f"Bearer {token}"})


def fields_of(error: dict[str, Any]) -> set[str]:
    """The field names an invalid_input error's details point at."""
    details = error["extensions"]["details"]
    assert isinstance(details, list) and details, error
    return {d["field"] for d in details}


def assert_no_leak(text: str) -> None:
    """No stack trace, no driver or Python internals in what a client sees."""
    for marker in ("Traceback", 'File "', "asyncpg", "psycopg", "site-packages"):
        assert marker not in text, text


# -- graphql-transport-ws ------------------------------------------------------------------------


async def send(ws: WebSocketConnection, message: dict[str, Any]) -> None:
    await ws.send_message(json.dumps(message))


async def receive(ws: WebSocketConnection, timeout: float = 5) -> dict[str, Any]:
    """The next message that is not a ping (pings are answered)."""
    with trio.fail_after(timeout):
        while True:
            message: dict[str, Any] = json.loads(await ws.get_message())
            if message["type"] == "ping":
                await send(ws, {"type": "pong"})
                continue
            return message


async def init(ws: WebSocketConnection, token: str) -> None:
    await send(ws, {"type": "connection_init", "payload": {"token": token}})
    assert (await receive(ws))["type"] == "connection_ack"


async def subscribe(ws: WebSocketConnection, op_id: str, query: str,
                    variables: dict[str, Any] | None = None) -> None:
    await send(ws, {"id": op_id, "type": "subscribe",
                    "payload": {"query": query, "variables": variables or {}}})


def ws_url(api_or_url: Api | str) -> str:
    base = api_or_url if isinstance(api_or_url, str) else api_or_url.url
    return base.replace("http://", "ws://") + "/graphql"
