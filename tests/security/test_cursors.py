"""Forged list cursors are invalid input on both transports, never an internal error.

A cursor is base64 of a small JSON array; one holding JSON nested deeper than the parser
recurses made GraphQL's ``todos(after:)`` answer ``internal`` (REST's query string is too
short to carry it). Cursors longer than any we issue are now refused before decoding.
"""

from __future__ import annotations

import base64

import httpx
import trio

from tests.harness import register, start_instance


def _cursor(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


HOSTILE = [
    _cursor(b"[" * 20_000 + b"]" * 20_000),  # ~53 KB: fits a GraphQL body, not a URL
    _cursor(b"[" * 2_000 + b"]" * 2_000),
    _cursor(b'["2026-01-01T00:00:00+00:00", "' + b"0" * 300 + b'"]'),
    "x" * 201,
]


async def test_forged_cursors_are_invalid_input(database_url: str) -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery, httpx.AsyncClient(timeout=10) as client:
            instance = await start_instance(nursery, database_url)
            user = await register(client, instance.url)
            for cursor in HOSTILE:
                r = await client.post(f"{instance.url}/graphql", headers=user.headers, json={
                    "query": "query($c: String) { todos(after: $c) { nodes { id } } }", "variables": {"c": cursor}})
                codes = {e["extensions"]["code"] for e in r.json().get("errors", [])}
                assert r.status_code == 200 and codes == {"invalid_input"}, (len(cursor), r.text[:300])
                if len(cursor) < 8000:  # what a URL can carry
                    r = await client.get(f"{instance.url}/api/todos", params={"cursor": cursor}, headers=user.headers)
                    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_input", r.text[:300]
            nursery.cancel_scope.cancel()
