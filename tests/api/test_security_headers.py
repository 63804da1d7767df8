"""Security headers on every response, CORS only for the allow-list, and tokens that expire
(also closing a websocket that outlives its token)."""

from __future__ import annotations

import json

import httpx
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from tests.harness import register, start_instance

ALLOWED = "https://todo.example.com"


async def test_headers_and_cors(database_url: str) -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery, httpx.AsyncClient() as client:
            instance = await start_instance(nursery, database_url, cors_origins=f"{ALLOWED}, https://other.example")
            user = await register(client, instance.url)
            for method, path in [("GET", "/api/todos"), ("GET", "/healthz"), ("GET", "/nope"),
                                 ("POST", "/api/todos"), ("GET", "/api/me")]:
                r = await client.request(method, instance.url + path, headers={**user.headers, "Origin": ALLOWED}, json={})
                assert r.headers["X-Content-Type-Options"] == "nosniff"
                assert r.headers["X-Frame-Options"] == "DENY"
                assert r.headers["Referrer-Policy"] == "no-referrer"
                assert r.headers["Access-Control-Allow-Origin"] == ALLOWED
                assert "Origin" in r.headers["Vary"]
            r = await client.get(f"{instance.url}/api/todos", headers={**user.headers, "Origin": "https://evil.example"})
            assert r.status_code == 200 and "Access-Control-Allow-Origin" not in r.headers
            assert r.headers["Cache-Control"] == "no-store"
            preflight = {"Origin": ALLOWED, "Access-Control-Request-Method": "PATCH",
                         "Access-Control-Request-Headers": "authorization, content-type"}
            r = await client.options(f"{instance.url}/api/todos/x", headers=preflight)
            assert r.status_code == 204
            assert "PATCH" in r.headers["Access-Control-Allow-Methods"]
            assert "Authorization" in r.headers["Access-Control-Allow-Headers"]
            r = await client.options(f"{instance.url}/api/todos/x", headers={**preflight, "Origin": "https://evil.example"})
            assert "Access-Control-Allow-Origin" not in r.headers
            instance.stop()


async def test_an_expired_token_is_refused_and_its_socket_closed(database_url: str) -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery, httpx.AsyncClient() as client:
            instance = await start_instance(nursery, database_url, token_max_age=2.0)
            user = await register(client, instance.url)
            assert (await client.get(f"{instance.url}/api/me", headers=user.headers)).status_code == 200
            async with open_websocket_url(instance.ws_url) as ws:
                await ws.send_message(json.dumps({"type": "hello", "token": user.token, "since": None}))
                started = trio.current_time()
                try:
                    while True:
                        await ws.get_message()
                except ConnectionClosed as closed:
                    assert closed.reason.code == 4001
                # itsdangerous counts whole seconds: the token lives 3 to 4 s.
                assert trio.current_time() - started < 4.5
            r = await client.get(f"{instance.url}/api/me", headers=user.headers)
            assert r.status_code == 401 and r.json()["error"]["message"] == "the token has expired"
            instance.stop()
