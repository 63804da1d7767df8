"""The logs an operator reads: one line per request and per websocket session, with the
request id (the client's X-Request-ID, or ours, returned in the response), JSON when asked,
readable text by default; an error logged with the request id of the request it broke."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from nursery import logs
from tests.harness import hello, next_of_type, register, start_instance
from tests.servers import free_port

NURSERY = [sys.executable, "-m", "nursery"]


def access_lines(caplog: pytest.LogCaptureFixture, event: str) -> list[dict[str, Any]]:
    return [r.fields for r in caplog.records  # type: ignore[attr-defined]
            if r.name == logs.ACCESS and getattr(r, "fields", {}).get("event") == event]


async def test_a_request_is_one_line_with_its_route_status_user_and_request_id(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger=logs.ACCESS)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery, httpx.AsyncClient() as client:
            instance = await start_instance(nursery, database_url)
            user = await register(client, instance.url)
            r = await client.post(f"{instance.url}/api/todos", json={"title": "t"},
                                  headers={**user.headers, "X-Request-ID": "client-chose-this"})
            assert r.status_code == 201 and r.headers["x-request-id"] == "client-chose-this"
            r = await client.get(f"{instance.url}/api/todos/not-a-todo", headers=user.headers)
            generated = r.headers["x-request-id"]
            assert r.status_code == 404 and len(generated) == 16
            r = await client.get(f"{instance.url}/graphql")  # passed on to the Quart app
            assert r.status_code == 200 and r.headers["x-request-id"]
            nursery.cancel_scope.cancel()
    lines = access_lines(caplog, "http")
    write = next(line for line in lines if line["method"] == "POST" and line["route"] == "/api/todos")
    assert write["status"] == 201 and write["user"] == user.user_id
    assert write["session"] == user.session_id and write["ms"] > 0
    miss = next(line for line in lines if line["route"] == "/api/todos/<todo_id>")
    assert miss["status"] == 404 and miss["path"] == "/api/todos/not-a-todo"
    assert any(line["route"] == "/graphql" and line["status"] == 200 for line in lines)


async def test_a_server_failure_is_logged_once_with_its_request_id(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery, httpx.AsyncClient() as client:
            instance = await start_instance(nursery, database_url)
            user = await register(client, instance.url)
            await drop_table(database_url, "todos")  # a broken schema: no client's fault
            r = await client.post(f"{instance.url}/api/todos", json={"title": "t"}, headers=user.headers)
            assert r.status_code == 500 and r.json()["error"]["code"] == "internal"
            nursery.cancel_scope.cancel()
    errors = [rec for rec in caplog.records if rec.levelname == "ERROR"]
    assert len(errors) == 1, [e.getMessage() for e in errors]
    assert errors[0].exc_info is not None
    assert errors[0].rid == r.headers["x-request-id"]  # type: ignore[attr-defined]


async def drop_table(database_url: str, table: str) -> None:
    import asyncio

    import asyncpg

    async def drop() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute(f"DROP TABLE {table} CASCADE")
        finally:
            await conn.close()

    await trio.to_thread.run_sync(asyncio.run, drop())


async def test_a_websocket_session_is_one_line_with_its_close_code_and_frames(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger=logs.ACCESS)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery, httpx.AsyncClient() as client:
            instance = await start_instance(nursery, database_url)
            user = await register(client, instance.url)
            async with open_websocket_url(instance.ws_url) as ws:
                await hello(ws, user.token, None)
                await ws.send_message('{"type":"ping"}')
                await next_of_type(ws, "pong")
                await client.post(f"{instance.url}/api/auth/logout", headers=user.headers)
                with pytest.raises(ConnectionClosed):  # closed 4001: the session was revoked
                    while True:
                        await ws.get_message()
            nursery.cancel_scope.cancel()
    (line,) = access_lines(caplog, "websocket")
    assert line["path"] == "/ws" and line["close"] == 4001
    assert line["user"] == user.user_id and line["in"] == 2 and line["out"] >= 2


def test_json_lines_carry_the_instance_and_the_request_id() -> None:
    logs.tag_records()
    token = logs.request_id.set("r-42")
    record = logging_record("something broke", level=40)
    logs.request_id.reset(token)
    logs._Context("instance-7").filter(record)
    body = json.loads(logs.JsonFormatter().format(record))
    assert body["level"] == "error" and body["instance"] == "instance-7" and body["rid"] == "r-42"
    assert body["message"] == "something broke"
    text = logs.TextFormatter().format(record)
    assert "instance-7" in text and "rid=r-42" in text


def logging_record(message: str, level: int) -> Any:
    import logging

    return logging.getLogRecordFactory()("nursery.test", level, __file__, 1, message, None, None)


async def test_the_server_writes_json_lines_when_asked(tmp_path: Path, database_url: str) -> None:
    """End to end: NURSERY_LOG_FORMAT=json makes every stderr line a JSON object; a request
    is one of them."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NURSERY_")}
    env |= {"NURSERY_DATABASE_URL": database_url, "NURSERY_SECRET_KEY": "k" * 32,
            "NURSERY_LOG_FORMAT": "json", "NURSERY_INSTANCE_NAME": "json-one"}
    log_path = tmp_path / "stderr.log"
    with log_path.open("wb") as stderr:
        process = await trio.lowlevel.open_process(
            [*NURSERY, "serve", "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        try:
            async with httpx.AsyncClient() as client:
                with trio.fail_after(30):
                    while True:
                        try:
                            r = await client.get(f"http://127.0.0.1:{port}/healthz",
                                                 headers={"X-Request-ID": "probe-1"})
                            break
                        except httpx.TransportError:
                            await trio.sleep(0.1)
                assert r.status_code == 200
        finally:
            process.send_signal(signal.SIGTERM)
            with trio.fail_after(20):
                await process.wait()
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    assert lines and all(line["instance"] == "json-one" for line in lines)
    (request,) = [line for line in lines if line.get("event") == "http" and line.get("rid") == "probe-1"]
    assert request["route"] == "/healthz" and request["status"] == 200
