"""Helpers for the REST API tests: an instance with one HTTP client, and assertions on the
error shape of docs/api.md (``{"error": {"code", "message", "details"}}``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from tests.harness import Instance, User, login, register


@dataclass
class Api:
    """A running instance and one HTTP client pointed at it (``client`` has ``base_url``)."""

    instance: Instance
    client: httpx.AsyncClient

    @property
    def url(self) -> str:
        return self.instance.url

    async def register(self, device: str = "laptop") -> User:
        return await register(self.client, self.url, device)

    async def login(self, user: User, device: str) -> User:
        return await login(self.client, self.url, user, device)

    async def create(self, user: User, title: str = "a todo", **fields: Any) -> dict[str, Any]:
        r = await self.client.post("/api/todos", json={"title": title, **fields}, headers=user.headers)
        assert r.status_code == 201, r.text
        todo: dict[str, Any] = r.json()["todo"]
        return todo

    async def head(self, user: User) -> int:
        """The user's newest revision (the list reports the revision it reflects)."""
        r = await self.client.get("/api/todos", params={"limit": 1}, headers=user.headers)
        assert r.status_code == 200, r.text
        rev: int = r.json()["rev"]
        return rev

    async def all_todos(self, user: User, **params: Any) -> list[dict[str, Any]]:
        """Every todo of ``user`` through the paged list."""
        items: list[dict[str, Any]] = []
        cursor = None
        while True:
            query = {**params, "limit": 200, **({"cursor": cursor} if cursor else {})}
            r = await self.client.get("/api/todos", params=query, headers=user.headers)
            assert r.status_code == 200, r.text
            body = r.json()
            items += body["items"]
            cursor = body["next_cursor"]
            if cursor is None:
                return items


def error_of(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """Assert ``response`` is an error in the contract's shape; return its ``error`` object."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert set(error) == {"code", "message", "details"}, error
    assert isinstance(error["code"], str) and error["code"], error
    assert isinstance(error["message"], str) and error["message"], error
    if code is not None:
        assert error["code"] == code, error
    return error


def fields_of(error: dict[str, Any]) -> set[str]:
    """The field names an InvalidInput error's details point at."""
    details = error["details"]
    assert isinstance(details, list) and details, error
    return {d["field"] for d in details}


TODO_KEYS = {"id", "title", "notes", "done", "due", "tags", "rev", "created_at", "updated_at"}
