"""Rate limits, shared by every instance through Redis: brute force, registrations, writes,
websocket floods; and what a Redis outage does to them (never a 500)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from tests.harness import register, start_instance


async def test_the_n_plus_first_failed_login_is_429_on_any_instance(database_url: str, redis_url: str) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, httpx.AsyncClient() as client:
            limits = {"login_rate_per_account": "5/60"}
            a = await start_instance(nursery, database_url, redis_url=redis_url, **limits)
            b = await start_instance(nursery, database_url, redis_url=redis_url, **limits)
            user = await register(client, a.url)
            wrong = {"email": user.email, "password": "not the password"}
            for attempt in range(5):
                r = await client.post(f"{(a, b)[attempt % 2].url}/api/auth/login", json=wrong)
                assert r.status_code == 401
            for instance in (a, b):
                r = await client.post(f"{instance.url}/api/auth/login", json=wrong)
                assert r.status_code == 429
                assert r.json()["error"]["code"] == "rate_limited"
                assert 1 <= int(r.headers["Retry-After"]) <= 13
            # Even the right password waits: the account is being guessed at.
            r = await client.post(f"{b.url}/api/auth/login", json={"email": user.email, "password": user.password})
            assert r.status_code == 429
            nursery.cancel_scope.cancel()


async def test_registrations_per_address_and_the_proxy_header(database_url: str) -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery, httpx.AsyncClient() as client:
            direct = await start_instance(nursery, database_url, register_rate_per_client="2/600")
            proxied = await start_instance(nursery, database_url, register_rate_per_client="2/600",
                                           trust_proxy_headers=True)

            async def register_from(instance: Any, forwarded: str | None) -> int:
                headers = {"X-Forwarded-For": forwarded} if forwarded else {}
                body = {"email": f"{trio.current_time()}@x.io", "password": "long enough"}
                return (await client.post(f"{instance.url}/api/auth/register", json=body, headers=headers)).status_code

            # Without trust, a forged header changes nothing: the third is refused.
            assert [await register_from(direct, f"10.0.0.{i}") for i in range(3)] == [201, 201, 429]
            # Behind the proxy, the address the proxy saw (the last hop) counts.
            assert [await register_from(proxied, "6.6.6.6, 10.0.0.1") for _ in range(3)] == [201, 201, 429]
            assert await register_from(proxied, "6.6.6.6, 10.0.0.2") == 201
            nursery.cancel_scope.cancel()


async def test_writes_per_user(database_url: str) -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery, httpx.AsyncClient() as client:
            instance = await start_instance(nursery, database_url, write_rate_per_user="3/60")
            user, other = await register(client, instance.url), await register(client, instance.url)
            codes = [(await client.post(f"{instance.url}/api/todos", json={"title": "t"}, headers=user.headers)).status_code
                     for _ in range(4)]
            assert codes == [201, 201, 201, 429]
            r = await client.get(f"{instance.url}/api/todos", headers=user.headers)
            assert r.status_code == 200 and len(r.json()["items"]) == 3  # reads are not writes
            r = await client.post(f"{instance.url}/api/todos", json={"title": "t"}, headers=other.headers)
            assert r.status_code == 201  # another user is not affected
            nursery.cancel_scope.cancel()


async def test_writes_per_user_are_shared_by_the_instances(database_url: str, redis_url: str) -> None:
    """Writes are limited locally at once and shared in ~50 ms batches: another instance may
    let one more through before it hears, never a whole second quota."""
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery, httpx.AsyncClient() as client:
            a, b = [await start_instance(nursery, database_url, redis_url=redis_url,
                                         write_rate_per_user="3/60") for _ in range(2)]
            user = await register(client, a.url)

            async def write(instance: Any) -> int:
                r = await client.post(f"{instance.url}/api/todos", json={"title": "t"}, headers=user.headers)
                return r.status_code

            assert [await write(a) for _ in range(3)] == [201, 201, 201]
            await trio.sleep(0.3)  # a has charged the shared counter
            first_on_b = await write(b)
            await trio.sleep(0.3)
            assert first_on_b in (201, 429)
            assert [await write(b) for _ in range(3)] == [429, 429, 429]
            assert await write(a) == 429
            nursery.cancel_scope.cancel()


async def test_redis_outage_fails_open_for_writes_and_closed_for_logins(database_url: str, own_redis: Any) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, httpx.AsyncClient() as client:
            instance = await start_instance(nursery, database_url, redis_url=own_redis.url,
                                            write_rate_per_user="100/60", login_rate_per_account="100/60",
                                            broker_timeout=1.0)
            user = await register(client, instance.url)
            own_redis.stop()
            r = await client.post(f"{instance.url}/api/todos", json={"title": "during the outage"}, headers=user.headers)
            assert r.status_code == 201
            r = await client.post(f"{instance.url}/api/auth/login", json={"email": user.email, "password": user.password})
            assert r.status_code == 503 and "Retry-After" in r.headers
            # the write's shared count is given up on at the next batch (broker_timeout)
            with trio.fail_after(5):
                while "nursery_rate_limit_failed_open_total 1.0" not in (
                    await client.get(f"{instance.url}/metrics")
                ).text:
                    await trio.sleep(0.05)
            own_redis.start()
            nursery.cancel_scope.cancel()


async def test_a_websocket_flood_is_closed_4029_and_others_do_not_notice(database_url: str) -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery, httpx.AsyncClient() as client:
            instance = await start_instance(nursery, database_url, ws_message_rate="10/1")
            user = await register(client, instance.url)
            async with open_websocket_url(instance.ws_url) as calm, open_websocket_url(instance.ws_url) as flood:
                for ws in (calm, flood):
                    await ws.send_message(json.dumps({"type": "hello", "token": user.token, "since": None}))
                    assert json.loads(await ws.get_message())["type"] == "welcome"
                code = None
                try:
                    for _ in range(200):
                        await flood.send_message('{"type":"ping"}')
                    while True:
                        await flood.get_message()
                except ConnectionClosed as closed:
                    code = closed.reason.code
                assert code == 4029
                await client.post(f"{instance.url}/api/todos", json={"title": "still live"}, headers=user.headers)
                while (frame := json.loads(await calm.get_message()))["type"] != "change":
                    pass
                assert frame["todo"]["title"] == "still live"
            nursery.cancel_scope.cancel()
