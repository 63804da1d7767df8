"""Subscriptions over graphql-transport-ws: live changes across instances (real Redis),
resume without loss or duplicates, session events, and the protocol's close codes."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from tests.api.graphql.support import (
    SUBPROTOCOL,
    TODO_FIELDS,
    Gql,
    init,
    receive,
    send,
    subscribe,
    ws_url,
)
from tests.api.support import Api
from tests.harness import User, login, register, start_instance
from tests.live import server_state

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

TODO_CHANGED = f"""subscription($since: Int) {{ todoChanged(since: $since) {{
  kind rev change {{ rev op id todo {{ {TODO_FIELDS} }} }} }} }}"""
SESSION_EVENTS = "subscription { sessionEvents { kind session { id device current } online } }"


async def closed_with(ws: WebSocketConnection, timeout: float = 5) -> int:
    """Read until the server closes the socket; its close code."""
    with trio.fail_after(timeout):
        try:
            while True:
                await ws.get_message()
        except ConnectionClosed as closed:
            assert closed.reason is not None
            code: int = closed.reason.code
            return code


async def next_event(ws: WebSocketConnection, op_id: str, field: str = "todoChanged") -> dict[str, Any]:
    message = await receive(ws)
    assert message["type"] == "next" and message["id"] == op_id, message
    assert "errors" not in message["payload"], message
    event: dict[str, Any] = message["payload"]["data"][field]
    return event


class Mirror:
    """A device's copy of the todos, kept by applying todoChanged events."""

    def __init__(self) -> None:
        self.rev = 0
        self.todos: dict[str, dict[str, Any]] = {}
        self.revs: list[int] = []

    def apply(self, event: dict[str, Any]) -> None:
        assert event["kind"] == "CHANGE", event
        change = event["change"]
        assert change["rev"] == event["rev"] > self.rev, (event, self.rev)
        self.revs.append(change["rev"])
        self.rev = change["rev"]
        if change["op"] == "UPSERT":
            self.todos[change["id"]] = change["todo"]
        else:
            self.todos.pop(change["id"], None)


def as_rest(todo: dict[str, Any]) -> dict[str, Any]:
    renamed = {"createdAt": "created_at", "updatedAt": "updated_at"}
    return {renamed.get(k, k): v for k, v in todo.items()}


async def rest_write(client: httpx.AsyncClient, base: str, user: User, n: int, prefix: str = "t") -> list[str]:
    ids = []
    for i in range(n):
        r = await client.post(f"{base}/api/todos", json={"title": f"{prefix}{i}"}, headers=user.headers)
        assert r.status_code == 201, r.text
        ids.append(r.json()["todo"]["id"])
    return ids


async def test_a_rest_write_on_another_instance_reaches_the_subscription(database_url: str, redis_url: str) -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery, httpx.AsyncClient() as client:
            a = await start_instance(nursery, database_url, redis_url=redis_url)
            b = await start_instance(nursery, database_url, redis_url=redis_url)
            user = await register(client, a.url)
            async with open_websocket_url(ws_url(a.url), subprotocols=[SUBPROTOCOL]) as ws:
                await init(ws, user.token)
                await subscribe(ws, "live", TODO_CHANGED)  # since: null, live from now
                assert await next_event(ws, "live") == {"kind": "HEAD", "rev": 0, "change": None}
                [todo_id] = await rest_write(client, b.url, user, 1, "from b")
                event = await next_event(ws, "live")
                assert event["kind"] == "CHANGE" and event["rev"] == 1
                assert event["change"]["op"] == "UPSERT" and event["change"]["todo"]["title"] == "from b0"
                r = await client.patch(f"{b.url}/api/todos/{todo_id}", json={"done": True}, headers=user.headers)
                event = await next_event(ws, "live")
                assert as_rest(event["change"]["todo"]) == r.json()["todo"]
                r = await client.delete(f"{b.url}/api/todos/{todo_id}", headers=user.headers)
                assert await next_event(ws, "live") == {
                    "kind": "CHANGE", "rev": 3, "change": {"rev": 3, "op": "DELETE", "id": todo_id, "todo": None}}
            nursery.cancel_scope.cancel()


async def test_resume_with_since_loses_nothing_and_repeats_nothing(database_url: str, redis_url: str) -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery, httpx.AsyncClient() as client:
            a = await start_instance(nursery, database_url, redis_url=redis_url)
            b = await start_instance(nursery, database_url, redis_url=redis_url)
            user = await register(client, a.url)
            ids = await rest_write(client, a.url, user, 3)
            mirror = Mirror()
            async with open_websocket_url(ws_url(a.url), subprotocols=[SUBPROTOCOL]) as ws:
                await init(ws, user.token)
                await subscribe(ws, "1", TODO_CHANGED, {"since": 0})
                assert (await next_event(ws, "1"))["kind"] == "HEAD"
                while mirror.rev < 3:
                    mirror.apply(await next_event(ws, "1"))
            # Offline at rev 3: writes on both instances, an update and a delete among them.
            await rest_write(client, b.url, user, 2, "while away ")
            r = await client.patch(f"{a.url}/api/todos/{ids[0]}", json={"done": True}, headers=user.headers)
            assert r.status_code == 200
            r = await client.delete(f"{b.url}/api/todos/{ids[1]}", headers=user.headers)
            assert r.status_code == 204
            # Back, on the other instance, resuming from the last revision applied.
            async with open_websocket_url(ws_url(b.url), subprotocols=[SUBPROTOCOL]) as ws:
                await init(ws, user.token)
                await subscribe(ws, "again", TODO_CHANGED, {"since": mirror.rev})
                assert await next_event(ws, "again") == {"kind": "HEAD", "rev": 7, "change": None}
                while mirror.rev < 7:
                    mirror.apply(await next_event(ws, "again"))
                # And live again after the backlog, with no duplicate of it.
                await rest_write(client, a.url, user, 1, "after ")
                mirror.apply(await next_event(ws, "again"))
                with trio.move_on_after(0.3):
                    extra = await receive(ws)
                    raise AssertionError(f"unexpected message {extra}")
            assert mirror.revs == list(range(1, 9))
            state, rev = await server_state(client, a.url, user.headers)
            assert rev == 8 and {k: as_rest(v) for k, v in mirror.todos.items()} == state
            nursery.cancel_scope.cancel()


async def test_since_past_the_head_is_a_reset(api: Api) -> None:
    with trio.fail_after(10):
        user = await api.register()
        await api.create(user)
        async with open_websocket_url(ws_url(api), subprotocols=[SUBPROTOCOL]) as ws:
            await init(ws, user.token)
            await subscribe(ws, "1", TODO_CHANGED, {"since": 1000})
            assert await next_event(ws, "1") == {"kind": "HEAD", "rev": 1, "change": None}
            assert await next_event(ws, "1") == {"kind": "RESET", "rev": 1, "change": None}
            await subscribe(ws, "2", TODO_CHANGED, {"since": -1})
            message = await receive(ws)
            assert message["type"] == "error" and message["id"] == "2", message
            assert message["payload"][0]["extensions"]["code"] == "invalid_input"


async def test_session_events_and_presence(api: Api) -> None:
    with trio.fail_after(10):
        laptop = await api.register("laptop")
        async with open_websocket_url(ws_url(api), subprotocols=[SUBPROTOCOL]) as ws:
            await init(ws, laptop.token)
            await subscribe(ws, "s", SESSION_EVENTS)
            phone = await api.login(laptop, "phone")
            seen: list[dict[str, Any]] = []
            while not any(e["kind"] == "CREATED" for e in seen):
                seen.append(await next_event(ws, "s", "sessionEvents"))
            created = next(e for e in seen if e["kind"] == "CREATED")
            assert created["session"] == {"id": phone.session_id, "device": "phone", "current": False}
            presence = [e for e in seen if e["kind"] == "PRESENCE"]
            assert all(e["online"] == [laptop.session_id] for e in presence), presence
            # The laptop's connection makes it online, as /ws does.
            r = await api.client.get("/api/sessions", headers=phone.headers)
            online = {s["id"]: s["online"] for s in r.json()["sessions"]}
            assert online == {laptop.session_id: True, phone.session_id: False}
            r = await api.client.delete(f"/api/sessions/{phone.session_id}", headers=laptop.headers)
            while (event := await next_event(ws, "s", "sessionEvents"))["kind"] != "REVOKED":
                pass
            assert event["session"]["id"] == phone.session_id


async def test_queries_and_mutations_run_over_the_socket_too(api: Api) -> None:
    with trio.fail_after(10):
        user = await api.register()
        async with open_websocket_url(ws_url(api), subprotocols=[SUBPROTOCOL]) as ws:
            await init(ws, user.token)
            await subscribe(ws, "m", 'mutation { createTodo(input: {title: "over ws"}) { title rev } }')
            assert await receive(ws) == {"id": "m", "type": "next",
                                         "payload": {"data": {"createTodo": {"title": "over ws", "rev": 1}}}}
            assert await receive(ws) == {"id": "m", "type": "complete"}
            await subscribe(ws, "q", '{ todo(id: "nope") { id } }')
            message = await receive(ws)
            assert message["payload"]["errors"][0]["extensions"]["code"] == "not_found"
            assert await receive(ws) == {"id": "q", "type": "complete"}
            await subscribe(ws, "bad", "{ me { password } }")
            message = await receive(ws)
            assert message["type"] == "error" and message["payload"][0]["extensions"]["code"] == "invalid_input"
            # The id of a finished operation can be used again; the socket is still fine.
            await subscribe(ws, "m", "{ me { email } }")
            assert (await receive(ws))["payload"] == {"data": {"me": {"email": user.email}}}
            await send(ws, {"type": "ping"})
            assert await receive(ws) == {"id": "m", "type": "complete"}
            assert await receive(ws) == {"type": "pong"}


async def test_complete_stops_one_subscription_and_frees_its_id(api: Api) -> None:
    with trio.fail_after(10):
        user = await api.register()
        async with open_websocket_url(ws_url(api), subprotocols=[SUBPROTOCOL]) as ws:
            await init(ws, user.token)
            await subscribe(ws, "a", TODO_CHANGED)
            await subscribe(ws, "b", TODO_CHANGED)
            heads = {(await receive(ws))["id"], (await receive(ws))["id"]}
            assert heads == {"a", "b"}
            await send(ws, {"id": "a", "type": "complete"})
            await api.create(user, "one")
            message = await receive(ws)
            assert message["id"] == "b" and message["payload"]["data"]["todoChanged"]["rev"] == 1
            await subscribe(ws, "a", TODO_CHANGED, {"since": 0})  # reused at once
            assert (await next_event(ws, "a"))["kind"] == "HEAD"
            assert (await next_event(ws, "a"))["rev"] == 1
            with trio.move_on_after(0.2):
                raise AssertionError(f"unexpected message {await receive(ws)}")


async def test_too_many_operations_on_one_socket_are_refused_one_by_one(database_url: str) -> None:
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery, httpx.AsyncClient() as client:
            instance = await start_instance(nursery, database_url, ws_message_rate="1000/1")
            user = await register(client, instance.url)
            async with open_websocket_url(ws_url(instance.url), subprotocols=[SUBPROTOCOL]) as ws:
                await init(ws, user.token)
                for i in range(20):
                    await subscribe(ws, f"s{i}", TODO_CHANGED)
                for _ in range(20):
                    assert (await receive(ws))["type"] == "next"
                await subscribe(ws, "one too many", TODO_CHANGED)
                message = await receive(ws)
                assert message["type"] == "error" and message["id"] == "one too many"
                assert message["payload"][0]["extensions"]["code"] == "rate_limited"
                await send(ws, {"id": "s0", "type": "complete"})
                await subscribe(ws, "one more", TODO_CHANGED)
                assert (await receive(ws))["id"] == "one more"
            nursery.cancel_scope.cancel()


async def test_a_flood_of_messages_is_closed_with_4029(api: Api) -> None:
    with trio.fail_after(10):
        user = await api.register()
        async with open_websocket_url(ws_url(api), subprotocols=[SUBPROTOCOL]) as ws:
            await init(ws, user.token)
            with pytest.raises(ConnectionClosed) as closed:
                for _ in range(100):  # default: 20 a second
                    await send(ws, {"type": "pong"})
                await ws.get_message()
            assert closed.value.reason is not None and closed.value.reason.code == 4029


async def test_revoking_the_session_closes_its_socket_with_4001(api: Api) -> None:
    with trio.fail_after(10):
        laptop = await api.register("laptop")
        phone = await api.login(laptop, "phone")
        async with open_websocket_url(ws_url(api), subprotocols=[SUBPROTOCOL]) as ws:
            await init(ws, phone.token)  # no subscription: the connection itself is closed
            r = await api.client.delete(f"/api/sessions/{phone.session_id}", headers=laptop.headers)
            assert r.status_code == 204
            assert await closed_with(ws) == 4001


async def test_a_restarting_instance_closes_sockets_with_1012(database_url: str) -> None:
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery, httpx.AsyncClient() as client:
            instance = await start_instance(nursery, database_url)
            user = await register(client, instance.url)
            async with open_websocket_url(ws_url(instance.url), subprotocols=[SUBPROTOCOL]) as idle, \
                    open_websocket_url(ws_url(instance.url), subprotocols=[SUBPROTOCOL]) as busy:
                await init(idle, user.token)
                await init(busy, user.token)
                await subscribe(busy, "1", TODO_CHANGED)
                await receive(busy)
                instance.stop()
                assert await closed_with(idle) == 1012
                assert await closed_with(busy) == 1012


async def test_a_slow_subscriber_is_closed_with_4008(database_url: str) -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery, httpx.AsyncClient() as client:
            instance = await start_instance(nursery, database_url, ws_queue_size=4, ws_send_timeout=0.5,
                                            ws_message_rate="1000/1")
            user = await register(client, instance.url)
            async with open_websocket_url(ws_url(instance.url), subprotocols=[SUBPROTOCOL],
                                          message_queue_size=1) as ws:
                await init(ws, user.token)
                for i in range(20):  # every change goes out 20 times
                    await subscribe(ws, f"s{i}", TODO_CHANGED)
                # The client reads nothing more while the server has ~10 MB to say: far
                # beyond socket buffers and the feeds' queues.
                for i in range(50):
                    r = await client.post(f"{instance.url}/api/todos", json={"title": f"t{i}", "notes": "x" * 9000},
                                          headers=user.headers)
                    assert r.status_code == 201
                assert await closed_with(ws, timeout=20) == 4008
            nursery.cancel_scope.cancel()


# -- the protocol's own rules ---------------------------------------------------------------------


async def test_without_the_subprotocol_the_socket_is_closed_with_4406(api: Api) -> None:
    with trio.fail_after(10):
        async with open_websocket_url(ws_url(api)) as ws:
            assert await closed_with(ws) == 4406
        async with open_websocket_url(ws_url(api), subprotocols=["graphql-ws"]) as ws:
            assert await closed_with(ws) == 4406


@pytest.mark.parametrize("payload", [{}, {"token": "not a token"}, {"token": 42},
                                     {"Authorization": "Basic abc"}, {"Authorization": "Bearer nope"}])
async def test_init_without_valid_credentials_is_closed_with_4403(api: Api, payload: dict[str, Any]) -> None:
    with trio.fail_after(10):
        async with open_websocket_url(ws_url(api), subprotocols=[SUBPROTOCOL]) as ws:
            await send(ws, {"type": "connection_init", "payload": payload})
            assert await closed_with(ws) == 4403


async def test_credentials_may_come_as_an_authorization_header(api: Api) -> None:
    with trio.fail_after(10):
        user = await api.register()
        async with open_websocket_url(ws_url(api), subprotocols=[SUBPROTOCOL]) as ws:
            await send(ws, {"type": "connection_init", "payload": {"authorization": f"Bearer {user.token}"}})
            assert (await receive(ws))["type"] == "connection_ack"


async def test_protocol_violations_close_with_the_protocols_codes(api: Api) -> None:
    with trio.fail_after(15):
        user = await api.register()

        async def violation(messages: list[Any], *, after_init: bool) -> int:
            async with open_websocket_url(ws_url(api), subprotocols=[SUBPROTOCOL]) as ws:
                if after_init:
                    await init(ws, user.token)
                for message in messages:
                    await ws.send_message(message if isinstance(message, str | bytes) else json.dumps(message))
                return await closed_with(ws)

        subscribe_me = {"id": "1", "type": "subscribe", "payload": {"query": "{ me { id } }"}}
        assert await violation([subscribe_me], after_init=False) == 4401
        assert await violation([{"type": "connection_init", "payload": {"token": user.token}}] * 2,
                               after_init=False) == 4429
        long_sub = {"id": "1", "type": "subscribe", "payload": {"query": TODO_CHANGED}}
        assert await violation([long_sub, long_sub], after_init=True) == 4409
        for bad in ("not json", b"\x00binary", "[]", '{"type": "nope"}', '{"type": "subscribe", "id": "1"}',
                    '{"type": "subscribe", "id": 5, "payload": {"query": "{ me { id } }"}}',
                    '{"type": "subscribe", "id": "1", "payload": {"query": 5}}',
                    '{"type": "complete"}', '{"type": "subscribe", "id": "' + "x" * 200 + '", "payload": {}}',
                    '{"type": "connection_init", "payload": "token"}'):
            assert await violation([bad], after_init=True) == 4400, bad
        assert await violation(["not json"], after_init=False) == 4400
        # Larger than ws_max_message_bytes: refused by the server's websocket layer.
        huge = {"id": "1", "type": "subscribe", "payload": {"query": "{ me { id } }", "variables": {"x": "y" * 70_000}}}
        assert await violation([huge], after_init=True) == 1009


async def test_no_init_in_time_is_closed_with_4408(database_url: str) -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            instance = await start_instance(nursery, database_url, ws_hello_timeout=0.3)
            async with open_websocket_url(ws_url(instance.url), subprotocols=[SUBPROTOCOL]) as ws:
                await send(ws, {"type": "ping"})  # pings are answered before init, but do not count
                assert await receive(ws) == {"type": "pong"}
                assert await closed_with(ws) == 4408
            nursery.cancel_scope.cancel()


async def test_a_silent_client_is_closed_after_a_ping(database_url: str) -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery, httpx.AsyncClient() as client:
            instance = await start_instance(nursery, database_url, ws_ping_interval=0.2, ws_ping_timeout=0.3)
            user = await register(client, instance.url)
            async with open_websocket_url(ws_url(instance.url), subprotocols=[SUBPROTOCOL]) as ws:
                await init(ws, user.token)
                assert json.loads(await ws.get_message()) == {"type": "ping"}  # and no pong
                assert await closed_with(ws) == 4008
            async with open_websocket_url(ws_url(instance.url), subprotocols=[SUBPROTOCOL]) as ws:
                await init(ws, user.token)
                with trio.move_on_after(1.2):  # ``receive`` answers pings: kept open
                    await receive(ws, timeout=2)
                    raise AssertionError("nothing but pings was expected")
            nursery.cancel_scope.cancel()


async def test_rest_and_graphql_devices_see_the_same_feed(api: Api, gql: Gql) -> None:
    """A /ws device and a GraphQL subscription of the same user receive the same revisions."""
    with trio.fail_after(10):
        user = await api.register()
        other = await login(api.client, api.url, user, "phone")
        async with open_websocket_url(ws_url(api), subprotocols=[SUBPROTOCOL]) as ws, \
                open_websocket_url(api.instance.ws_url) as sync:
            await init(ws, user.token)
            await subscribe(ws, "1", TODO_CHANGED, {"since": 0})
            await sync.send_message(json.dumps({"type": "hello", "token": other.token, "since": 0}))
            assert json.loads(await sync.get_message())["type"] == "welcome"
            await gql.create(user, "via graphql")
            await api.create(other, "via rest")
            mirror = Mirror()
            assert (await next_event(ws, "1"))["kind"] == "HEAD"
            while mirror.rev < 2:
                mirror.apply(await next_event(ws, "1"))
            frames: list[dict[str, Any]] = []
            while len(frames) < 2:
                frame = json.loads(await sync.get_message())
                if frame["type"] == "change":
                    frames.append(frame)
            assert [f["todo"] for f in frames] == [as_rest(mirror.todos[f["todo"]["id"]]) for f in frames]
